// examples/linear_regression.cpp written against LibTorch, for the compile-time comparison:
// the lesson's data, custom model, MSE, SGD, training with validation, saving and loading the
// model, a complete checkpoint (epoch, model, optimizer, losses, hyperparameters, timestamp,
// generator state) saved and restored, inference without gradients. LibTorch has no plotting,
// so where ember draws its SVG figure this program writes the loss curves as CSV.
//
//   build/benchmarks/lesson_libtorch     writes linear_model.pt, checkpoint.tar and
//                                         training.csv here
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <string>
#include <vector>

struct LinearRegressionModelImpl : torch::nn::Module
{
    LinearRegressionModelImpl()
    {
        weight = register_parameter("weight", torch::randn({1}));
        bias = register_parameter("bias", torch::randn({1}));
    }
    torch::Tensor forward(const torch::Tensor& x) { return weight * x + bias; }
    torch::Tensor weight, bias;
};
TORCH_MODULE(LinearRegressionModel);

int main()
{
    std::printf("Using device: cpu\n");
    torch::manual_seed(42);

    const float weight = 0.7f, bias = 0.3f;
    auto X = torch::arange(0, 1, 0.02).unsqueeze(1);
    auto y = weight * X + bias;
    const std::int64_t n = X.size(0);
    const auto train_split = static_cast<std::int64_t>(0.7 * static_cast<double>(n));
    const auto val_split = static_cast<std::int64_t>(0.85 * static_cast<double>(n));
    auto X_train = X.slice(0, 0, train_split), y_train = y.slice(0, 0, train_split);
    auto X_val = X.slice(0, train_split, val_split), y_val = y.slice(0, train_split, val_split);
    auto X_test = X.slice(0, val_split, n), y_test = y.slice(0, val_split, n);
    std::printf("Train: %lld, Val: %lld, Test: %lld\n", static_cast<long long>(X_train.size(0)),
                static_cast<long long>(X_val.size(0)), static_cast<long long>(X_test.size(0)));

    LinearRegressionModel model;
    torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(0.01));

    const int epochs = 100;
    std::vector<double> train_losses, val_losses;
    std::printf("\nTraining for %d epochs...\n", epochs);
    for (int epoch = 0; epoch < epochs; ++epoch)
    {
        model->train();
        auto y_pred = model->forward(X_train);
        auto loss = torch::mse_loss(y_pred, y_train);
        optimizer.zero_grad();
        loss.backward();
        optimizer.step();
        train_losses.push_back(loss.item<double>());

        model->eval();
        double val_loss;
        {
            torch::NoGradGuard no_grad;
            val_loss = torch::mse_loss(model->forward(X_val), y_val).item<double>();
        }
        val_losses.push_back(val_loss);

        if (epoch % 20 == 0)
            std::printf("Epoch %3d: Train Loss = %.4f, Val Loss = %.4f\n", epoch,
                        train_losses.back(), val_loss);
    }

    torch::save(model, "linear_model.pt");
    std::printf("\nModel saved!\n");

    // A complete checkpoint, as the lesson's dictionary: LibTorch's C++ archives nest.
    {
        torch::serialize::OutputArchive checkpoint, model_state, optimizer_state, hyper;
        model->save(model_state);
        optimizer.save(optimizer_state);
        hyper.write("learning_rate", c10::IValue(0.01));
        hyper.write("weight", c10::IValue(0.7));
        hyper.write("bias", c10::IValue(0.3));
        const std::time_t now =
            std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
        char stamp[32];
        std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
        checkpoint.write("epoch", c10::IValue(static_cast<std::int64_t>(epochs)));
        checkpoint.write("model_state_dict", model_state);
        checkpoint.write("optimizer_state_dict", optimizer_state);
        checkpoint.write("train_loss", c10::IValue(train_losses.back()));
        checkpoint.write("val_loss", c10::IValue(val_losses.back()));
        checkpoint.write("hyperparameters", hyper);
        checkpoint.write("timestamp", c10::IValue(std::string(stamp)));
        checkpoint.write("global_step", c10::IValue(static_cast<std::int64_t>(epochs)));
        checkpoint.write("generator", at::detail::getDefaultCPUGenerator().get_state());
        checkpoint.save_to("checkpoint.tar");
    }
    std::printf("Checkpoint saved to 'checkpoint.tar'\n");

    {
        torch::serialize::InputArchive checkpoint, model_state, optimizer_state;
        checkpoint.load_from("checkpoint.tar");
        c10::IValue epoch, train_loss, val_loss, timestamp;
        checkpoint.read("epoch", epoch);
        checkpoint.read("train_loss", train_loss);
        checkpoint.read("val_loss", val_loss);
        checkpoint.read("timestamp", timestamp);
        std::printf("\nCheckpoint from epoch %lld\n", static_cast<long long>(epoch.toInt()));
        std::printf("Train loss: %.4f\n", train_loss.toDouble());
        std::printf("Val loss: %.4f\n", val_loss.toDouble());
        std::printf("Saved: %s\n", timestamp.toStringRef().c_str());

        checkpoint.read("model_state_dict", model_state);
        checkpoint.read("optimizer_state_dict", optimizer_state);
        LinearRegressionModel restored_model;
        restored_model->load(model_state);
        restored_model->eval();
        torch::optim::SGD restored_optimizer(restored_model->parameters(),
                                             torch::optim::SGDOptions(0.01));
        restored_optimizer.load(optimizer_state);
        std::printf("Model and optimizer restored!\n");
    }

    LinearRegressionModel loaded_model;
    torch::load(loaded_model, "linear_model.pt");
    loaded_model->eval();

    torch::NoGradGuard no_grad;
    const float final_weight = loaded_model->weight.item<float>();
    const float final_bias = loaded_model->bias.item<float>();
    const float test_loss = torch::mse_loss(loaded_model->forward(X_test), y_test).item<float>();
    std::printf("\nFinal Results:\n");
    std::printf("  Learned weight: %.4f (true: %g)\n", final_weight, weight);
    std::printf("  Learned bias: %.4f (true: %g)\n", final_bias, bias);
    std::printf("  Test loss: %.6f\n", test_loss);

    auto new_data = torch::tensor({0.25f, 0.5f, 0.75f}).unsqueeze(1);
    auto predictions = loaded_model->forward(new_data);
    std::printf("\nPredictions for new data:\n");
    for (std::int64_t i = 0; i < new_data.size(0); ++i)
        std::printf("  X = %.2f -> y = %.4f\n", new_data[i][0].item<float>(),
                    predictions[i][0].item<float>());

    std::ofstream csv("training.csv");
    csv << "epoch,train_loss,val_loss\n";
    for (std::size_t i = 0; i < train_losses.size(); ++i)
        csv << i << ',' << train_losses[i] << ',' << val_losses[i] << '\n';
    std::printf("\nLoss curves saved to training.csv\n");

    std::printf("\n\xE2\x9C\x93 Complete workflow finished!\n");
    return 0;
}
