// The lesson's complete workflow (shared/seed/saving_and_loading_models.md, "Putting It All
// Together") in C++ with ember: data, a custom model, MSE, SGD, training with validation,
// saving and loading the state_dict, a complete checkpoint saved and restored (the lesson's
// "Saving Complete Checkpoints"), inference in eval mode without gradients, and the figure.
// `.pth` and `.tar` files are PyTorch's own format, so Python opens them with torch.load.
//
//   build/examples/linear_regression      writes linear_model.pth, checkpoint.tar and
//                                          training.svg here
//   build/tools/ember inspect checkpoint.tar   shows what the checkpoint holds
#include <ember/core/grad_mode.hpp>
#include <ember/device/dispatch.hpp>
#include <ember/loss/mse.hpp>
#include <ember/optim/sgd.hpp>
#include <ember/serialize/file.hpp>

#include <cstdio>
#include <string_view>
#include <vector>

#include "lesson_model.hpp"

template <class Device>
int run()
{
    // ============================================
    // 1. Setup
    // ============================================
    std::printf("Using device: %s\n", std::string(Device::name).c_str());
    ember::manual_seed(42);

    // ============================================
    // 2. Prepare Data
    // ============================================
    const float weight = 0.7f, bias = 0.3f;
    // torch.arange(0, 1, 0.02).unsqueeze(dim=1), and y = weight * X + bias, rounded as PyTorch does
    const auto [X, y] = make_lesson_data(weight, bias);
    const std::size_t n = X.shape(0);

    const auto train_split = static_cast<std::size_t>(0.7 * n);
    const auto val_split = static_cast<std::size_t>(0.85 * n);
    auto X_train = rows(X, 0, train_split), y_train = rows(y, 0, train_split);
    auto X_val = rows(X, train_split, val_split), y_val = rows(y, train_split, val_split);
    auto X_test = rows(X, val_split, n), y_test = rows(y, val_split, n);
    std::printf("Train: %zu, Val: %zu, Test: %zu\n", X_train.shape(0), X_val.shape(0),
                X_test.shape(0));

    // Step 8 of the lesson: the model and the data on the device
    const auto X_train_d = ember::to<Device>(X_train), y_train_d = ember::to<Device>(y_train);
    const auto X_val_d = ember::to<Device>(X_val), y_val_d = ember::to<Device>(y_val);
    const auto X_test_d = ember::to<Device>(X_test), y_test_d = ember::to<Device>(y_test);

    LinearRegressionModel<Device> model;
    ember::nn::mse_loss<float, 2, Device> criterion;
    ember::optim::sgd optimizer(model.parameters(), {.lr = 0.01});

    // ============================================
    // 4. Train Model
    // ============================================
    const int epochs = 100;
    std::vector<double> train_losses, val_losses;
    std::printf("\nTraining for %d epochs...\n", epochs);
    for (int epoch = 0; epoch < epochs; ++epoch)
    {
        // Training: forward, loss, zero_grad, backward, step
        model.train();
        const auto& y_pred = model(X_train_d);
        float loss = criterion(y_pred, y_train_d);
        optimizer.zero_grad();
        model.backward(criterion.backward());
        optimizer.step();
        train_losses.push_back(loss);

        // Validation
        model.eval();
        float val_loss;
        {
            ember::no_grad guard;
            val_loss = criterion(model(X_val_d), y_val_d);
        }
        val_losses.push_back(val_loss);

        if (epoch % 20 == 0)
            std::printf("Epoch %3d: Train Loss = %.4f, Val Loss = %.4f\n", epoch, loss, val_loss);
    }

    // ============================================
    // 5. Save Model
    // ============================================
    // In PyTorch's format (by the extension): model.load_state_dict(torch.load(...)) in Python.
    ember::save(model.state_dict(), "linear_model.pth");
    std::printf("\nModel saved!\n");

    // A complete checkpoint, to resume training later: the lesson's dictionary as a struct.
    // (.tar is PyTorch's convention for checkpoints; the file is a torch.save zip, with ember's
    // exact-resume state under its "ember" key.)
    ember::checkpoint checkpoint;
    checkpoint.epoch = epochs;
    checkpoint.model_state_dict = model.state_dict();
    checkpoint.optimizer_state_dict = optimizer.state_dict();
    checkpoint.train_loss = train_losses.back();
    checkpoint.val_loss = val_losses.back();
    checkpoint.hyperparameters = {{"learning_rate", 0.01}, {"weight", 0.7}, {"bias", 0.3}};
    checkpoint.timestamp = ember::iso8601_now();
    // Beyond the lesson: what an exact resume also needs.
    checkpoint.global_step = epochs; // one optimizer step per epoch here
    checkpoint.generators.insert("default", ember::default_generator().state());
    ember::save(checkpoint, "checkpoint.tar");
    std::printf("Checkpoint saved to 'checkpoint.tar'\n");

    // ============================================
    // 6. Load and Evaluate
    // ============================================
    // Load the checkpoint (the lesson's "Loading from Checkpoint")
    const auto loaded_checkpoint = ember::load<ember::checkpoint>("checkpoint.tar");
    std::printf("\nCheckpoint from epoch %lld\n", static_cast<long long>(loaded_checkpoint.epoch));
    std::printf("Train loss: %.4f\n", loaded_checkpoint.train_loss);
    std::printf("Val loss: %.4f\n", loaded_checkpoint.val_loss);
    std::printf("Saved: %s\n", loaded_checkpoint.timestamp.c_str());
    std::printf("ember version: %s\n", loaded_checkpoint.ember_version.c_str());

    // Restore model and optimizer
    LinearRegressionModel<Device> restored_model;
    restored_model.load_state_dict(loaded_checkpoint.model_state_dict);
    restored_model.eval();
    ember::optim::sgd restored_optimizer(restored_model.parameters(), {.lr = 0.01});
    restored_optimizer.load_state_dict(loaded_checkpoint.optimizer_state_dict);
    std::printf("Model and optimizer restored!\n");

    LinearRegressionModel<Device> loaded_model;
    loaded_model.load_state_dict(ember::load<ember::state_dict>("linear_model.pth"));
    loaded_model.eval();

    float final_weight, final_bias, test_loss;
    {
        ember::no_grad guard;
        final_weight = loaded_model.weight.item();
        final_bias = loaded_model.bias.item();
        test_loss = criterion(loaded_model(X_test_d), y_test_d);
    }
    std::printf("\nFinal Results:\n");
    std::printf("  Learned weight: %.4f (true: %g)\n", final_weight, weight);
    std::printf("  Learned bias: %.4f (true: %g)\n", final_bias, bias);
    std::printf("  Test loss: %.6f\n", test_loss);

    // Step 7 of the lesson: predictions with the loaded model
    ember::tensor<float, 2> new_data = {{0.25f}, {0.5f}, {0.75f}};
    std::printf("\nPredictions for new data:\n");
    {
        ember::no_grad guard;
        const auto predictions = ember::to_host(loaded_model(ember::to<Device>(new_data)));
        for (std::size_t i = 0; i < new_data.shape(0); ++i)
            std::printf("  X = %.2f -> y = %.4f\n", new_data(i, 0), predictions(i, 0));
    }

    // ============================================
    // 7. Visualize Results
    // ============================================
    ember::plot::figure fig(12, 5);
    auto& curves = fig.subplot(1, 2, 1);
    curves.plot(train_losses, {.label = "Train", .width = 2});
    curves.plot(val_losses, {.label = "Validation", .width = 2});
    curves.xlabel("Epoch").ylabel("Loss (MSE)").title("Training Progress").legend().grid(true, 0.3);

    std::vector<double> y_plot;
    {
        ember::no_grad guard;
        y_plot = column(ember::to_host(loaded_model(ember::to<Device>(X))));
    }
    char learned[64];
    std::snprintf(learned, sizeof learned, "Learned: y=%.2fX+%.2f", final_weight, final_bias);
    auto& preds = fig.subplot(1, 2, 2);
    scatter_splits(preds, X_train, y_train, X_val, y_val, X_test, y_test);
    preds.plot(column(X), y_plot, {.label = learned, .color = "r", .width = 2});
    preds.plot(column(X), column(y),
               {.label = "True: y=0.7X+0.3", .color = "g", .width = 2, .dashed = true});
    preds.xlabel("X").ylabel("y").title("Final Predictions").legend().grid(true, 0.3);
    fig.save("training.svg");
    std::printf("\nFigure saved to training.svg\n");

    std::printf("\n\xE2\x9C\x93 Complete workflow finished!\n");
    return 0;
}

// `linear_regression [--device cpu|cuda|thrust_omp|thrust_cpp]`: by default cuda when this
// program was built with CUDA and a GPU is usable, else cpu, as the lesson's
// `device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')`.
int main(int argc, char** argv)
{
    try
    {
        ember::device_kind device = ember::default_device();
        if (argc == 3 && std::string_view(argv[1]) == "--device")
            device = ember::parse_device(argv[2]);
        else if (argc != 1)
        {
            std::fprintf(stderr, "usage: %s [--device cpu|cuda|thrust_omp|thrust_cpp]\n", argv[0]);
            return 2;
        }
        return ember::with_device(device, []<class Device>() { return run<Device>(); });
    }
    catch (const ember::error& e)
    {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
