// The lesson's exercise 2 (shared/seed/saving_and_loading_models.md): "Save a checkpoint at epoch
// 50, load it, and continue training to epoch 100" — with mini-batches of 8, shuffled. It trains
// the lesson's linear regression twice: 100 epochs straight, and 50 epochs, a checkpoint, a fresh
// model, optimizer and loader restored from it, 50 more. Then it compares the two runs bit for
// bit: a resumed ember run is the run that never stopped.
//
//   build/examples/resume_training      writes checkpoint.tar here; exits 1 unless identical
#include <ember/ember.hpp>

#include <cstdio>
#include <cstring>
#include <vector>

#include "lesson_model.hpp"

using dataset = ember::data::tensor_dataset<ember::tensor<float, 2>, ember::tensor<float, 2>>;
using subset = ember::data::subset<dataset>;

constexpr double learning_rate = 0.01;
constexpr ember::data::data_loader_options loader_options{
    .batch_size = 8, .shuffle = true, .seed = 42};

struct training
{
    training(const subset& train, const subset& val)
        : optimizer(model.parameters(), {.lr = learning_rate}), loader(train, loader_options),
          val_set(ember::data::materialize(val))
    {
    }

    // Epochs [epoch, last): mini-batch steps over the shuffled training set, then validation.
    void run_to(std::int64_t last)
    {
        for (; epoch < last; ++epoch)
        {
            model.train();
            double loss_sum = 0;
            std::int64_t batches = 0;
            for (const auto& [x, y] : loader)
            {
                const float loss = criterion(model(x), y);
                optimizer.zero_grad();
                model.backward(criterion.backward());
                optimizer.step();
                loss_sum += loss;
                ++batches;
                ++global_step;
            }
            model.eval();
            float val_loss;
            {
                ember::no_grad guard;
                val_loss = criterion(model(std::get<0>(val_set)), std::get<1>(val_set));
            }
            train_losses.push_back(loss_sum / static_cast<double>(batches));
            val_losses.push_back(val_loss);
            if (epoch % 20 == 0)
                std::printf("Epoch %3lld: Train Loss = %.4f, Val Loss = %.4f\n",
                            static_cast<long long>(epoch), train_losses.back(), val_loss);
        }
    }

    // The lesson's checkpoint dictionary, plus what an exact resume needs.
    ember::checkpoint to_checkpoint() const
    {
        ember::checkpoint c;
        c.epoch = epoch;
        c.model_state_dict = model.state_dict();
        c.optimizer_state_dict = optimizer.state_dict();
        c.train_loss = train_losses.back();
        c.val_loss = val_losses.back();
        c.hyperparameters.insert("learning_rate", learning_rate);
        c.hyperparameters.insert("batch_size", static_cast<std::int64_t>(8));
        c.hyperparameters.insert("weight", 0.7);
        c.hyperparameters.insert("bias", 0.3);
        c.timestamp = ember::iso8601_now();
        c.global_step = global_step;
        c.generators.insert("default", ember::default_generator().state());
        c.data_state = loader.state();
        c.extras.insert("train_losses", losses_tensor(train_losses));
        c.extras.insert("val_losses", losses_tensor(val_losses));
        return c;
    }

    void restore(const ember::checkpoint& c)
    {
        model.load_state_dict(c.model_state_dict);
        optimizer.load_state_dict(c.optimizer_state_dict);
        ember::default_generator().set_state(c.generators.at("default"));
        loader.load_state(c.data_state);
        epoch = c.epoch;
        global_step = c.global_step;
        auto history = [](const ember::value& v)
        {
            auto d = v.as<ember::host_tensor>().data<double>();
            return std::vector<double>(d.begin(), d.end());
        };
        train_losses = history(c.extras.at("train_losses"));
        val_losses = history(c.extras.at("val_losses"));
    }

    static ember::host_tensor losses_tensor(const std::vector<double>& losses)
    {
        ember::host_tensor t(ember::dtype::float64, {static_cast<std::int64_t>(losses.size())});
        std::memcpy(t.bytes().data(), losses.data(), t.nbytes());
        return t;
    }

    float test_loss(const subset& test)
    {
        auto [x, y] = ember::data::materialize(test);
        ember::no_grad guard;
        model.eval();
        return criterion(model(x), y);
    }

    void report(const subset& test)
    {
        std::printf("  Learned weight: %.4f, bias: %.4f, test loss: %.6f\n", model.weight.item(),
                    model.bias.item(), test_loss(test));
    }

    LinearRegressionModel<> model;
    ember::nn::mse_loss<float> criterion;
    ember::optim::sgd<float> optimizer;
    ember::data::data_loader<subset> loader;
    dataset::batch_type val_set;
    std::int64_t epoch = 0, global_step = 0;
    std::vector<double> train_losses, val_losses;
};

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b)
{
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

int run()
{
    // The lesson's data: y = 0.7 X + 0.3 on X = 0, 0.02, ..., 0.98, split 70/15/15 in order.
    const auto [X, y] = make_lesson_data();
    const dataset data(X, y);
    const auto [train, val, test] = ember::data::split(data, {0.7, 0.15, 0.15});
    std::printf("Train: %zu, Val: %zu, Test: %zu (mini-batches of %zu, shuffled)\n", train.size(),
                val.size(), test.size(), loader_options.batch_size);

    // 1. 100 epochs without stopping.
    std::printf("\nStraight run, 100 epochs:\n");
    ember::manual_seed(42);
    training straight(train, val);
    straight.run_to(100);
    straight.report(test);

    // 2. The same run stopped at epoch 50, its checkpoint saved.
    std::printf("\nInterrupted run, 50 epochs:\n");
    ember::manual_seed(42);
    {
        training first(train, val);
        first.run_to(50);
        ember::save(first.to_checkpoint(), "checkpoint.tar");
        std::printf("Checkpoint saved to 'checkpoint.tar' (epoch %lld, step %lld)\n",
                    static_cast<long long>(first.epoch), static_cast<long long>(first.global_step));
    } // the interrupted run is gone

    // 3. A fresh model, optimizer and loader, restored from the file, train to epoch 100.
    const auto checkpoint = ember::load<ember::checkpoint>("checkpoint.tar");
    std::printf("\nResumed from checkpoint.tar (epoch %lld, train loss %.4f, val loss %.4f):\n",
                static_cast<long long>(checkpoint.epoch), checkpoint.train_loss,
                checkpoint.val_loss);
    training resumed(train, val);
    resumed.restore(checkpoint);
    resumed.run_to(100);
    resumed.report(test);

    // 4. Bit for bit.
    const bool parameters = resumed.model.state_dict() == straight.model.state_dict();
    const bool optimizer = resumed.optimizer.state_dict() == straight.optimizer.state_dict();
    const bool losses = same_bits(resumed.train_losses, straight.train_losses) &&
                        same_bits(resumed.val_losses, straight.val_losses);
    const bool loader = resumed.loader.state() == straight.loader.state();
    auto say = [](bool same) { return same ? "identical" : "DIFFERENT"; };
    std::printf("\nResumed run vs straight run, bit for bit:\n");
    std::printf("  parameters:        %s\n", say(parameters));
    std::printf("  optimizer state:   %s\n", say(optimizer));
    std::printf("  losses per epoch:  %s\n", say(losses));
    std::printf("  data loader state: %s\n", say(loader));
    const bool identical = parameters && optimizer && losses && loader;
    std::printf("identical: %s\n", identical ? "yes" : "no");
    return identical ? 0 : 1;
}

int main()
{
    return run_reporting_errors(run);
}
