// The lesson's exercise 3 (shared/seed/saving_and_loading_models.md): "Train with SGD and Adam,
// save both, and visualize their predictions side-by-side." The lesson's linear regression, its
// data and seed, trained for 100 epochs once with SGD and once with Adam, both at lr 0.01 and
// from the same initial parameters; each saved as a state_dict in PyTorch's format, loaded back,
// and the loaded models' predictions drawn side by side beside the loss curves of both runs.
//
//   build/examples/compare_optimizers    writes model_sgd.pth, model_adam.pth,
//                                        compare_optimizers.svg and compare_optimizers.csv here
#include <ember/ember.hpp>
#include <ember/plot/history.hpp>

#include <cstdio>
#include <string>
#include <vector>

#include "lesson_model.hpp"

using dataset = ember::data::tensor_dataset<ember::tensor<float, 2>, ember::tensor<float, 2>>;
using batch = dataset::batch_type;

constexpr double learning_rate = 0.01;
constexpr int epochs = 100;

// The lesson's training loop with any optimizer; losses go into `rows` as NAME_train_loss and
// NAME_val_loss, one row per epoch.
template <class Optimizer>
void train(const std::string& name, const char* title, LinearRegressionModel<>& model,
           Optimizer& optimizer, const batch& train_set, const batch& val_set,
           std::vector<std::vector<std::pair<std::string, double>>>& rows)
{
    ember::nn::mse_loss<float> criterion;
    const auto& [X_train, y_train] = train_set;
    const auto& [X_val, y_val] = val_set;
    std::printf("\nTraining with %s (lr = %g) for %d epochs...\n", title, learning_rate, epochs);
    for (int epoch = 0; epoch < epochs; ++epoch)
    {
        model.train();
        const float loss = criterion(model(X_train), y_train);
        optimizer.zero_grad();
        model.backward(criterion.backward());
        optimizer.step();

        model.eval();
        float val_loss;
        {
            ember::no_grad guard;
            val_loss = criterion(model(X_val), y_val);
        }
        rows[epoch].emplace_back(name + "_train_loss", loss);
        rows[epoch].emplace_back(name + "_val_loss", val_loss);
        if (epoch % 20 == 0)
            std::printf("Epoch %3d: Train Loss = %.4f, Val Loss = %.4f\n", epoch, loss, val_loss);
    }
}

int run()
{
    // The lesson's data: y = 0.7 X + 0.3 on X = 0, 0.02, ..., 0.98, split 70/15/15 in order.
    const auto [X, y] = make_lesson_data();
    const dataset data(X, y);
    const auto [train_part, val_part, test_part] = ember::data::split(data, {0.7, 0.15, 0.15});
    const batch train_set = ember::data::materialize(train_part);
    const batch val_set = ember::data::materialize(val_part);
    const auto [X_test, y_test] = ember::data::materialize(test_part);
    std::printf("Train: %zu, Val: %zu, Test: %zu\n", train_part.size(), val_part.size(),
                test_part.size());

    std::vector<std::vector<std::pair<std::string, double>>> rows(epochs);
    for (int epoch = 0; epoch < epochs; ++epoch)
        rows[epoch].emplace_back("epoch", epoch);

    // Both start from the parameters the lesson's seed draws.
    {
        ember::manual_seed(42);
        LinearRegressionModel<> model;
        ember::optim::sgd optimizer(model.parameters(), {.lr = learning_rate});
        train("sgd", "SGD", model, optimizer, train_set, val_set, rows);
        ember::save(model.state_dict(), "model_sgd.pth");
        std::printf("Model saved to 'model_sgd.pth'\n");
    }
    {
        ember::manual_seed(42);
        LinearRegressionModel<> model;
        ember::optim::adam optimizer(model.parameters(), {.lr = learning_rate});
        train("adam", "Adam", model, optimizer, train_set, val_set, rows);
        ember::save(model.state_dict(), "model_adam.pth");
        std::printf("Model saved to 'model_adam.pth'\n");
    }
    ember::history history;
    for (const auto& row : rows)
        history.append(row);
    history.save_csv("compare_optimizers.csv");

    // Load both files into fresh models and compare them.
    ember::nn::mse_loss<float> criterion;
    const ember::tensor<float, 2> new_data = {{0.25f}, {0.5f}, {0.75f}};
    std::printf("\nLoaded models, predictions for new data and test loss:\n");
    std::printf("  %-9s %8s %8s %10s %10s %10s %11s\n", "optimizer", "weight", "bias", "X = 0.25",
                "X = 0.50", "X = 0.75", "test loss");
    struct loaded_model
    {
        std::string title;
        float weight, bias, test_loss;
        std::vector<double> predictions;
    };
    std::vector<loaded_model> loaded;
    for (const auto& [name, title] : {std::pair{"sgd", "SGD"}, std::pair{"adam", "Adam"}})
    {
        LinearRegressionModel<> model;
        model.load_state_dict(
            ember::load<ember::state_dict>("model_" + std::string(name) + ".pth"));
        model.eval();
        ember::no_grad guard;
        const auto predictions = model(new_data); // a copy: the next forward reuses the buffer
        const float test_loss = criterion(model(X_test), y_test);
        std::printf("  %-9s %8.4f %8.4f %10.4f %10.4f %10.4f %11.6f\n", title, model.weight.item(),
                    model.bias.item(), predictions(0, 0), predictions(1, 0), predictions(2, 0),
                    test_loss);
        loaded.push_back(
            {title, model.weight.item(), model.bias.item(), test_loss, column(model(X))});
    }
    std::printf("  %-9s %8.4f %8.4f %10.4f %10.4f %10.4f\n", "true", 0.7, 0.3, 0.7 * 0.25 + 0.3,
                0.7 * 0.5 + 0.3, 0.7 * 0.75 + 0.3);
    const loaded_model& better = loaded[1].test_loss < loaded[0].test_loss ? loaded[1] : loaded[0];
    std::printf("\nLower test loss: %s (%.6f)\n", better.title.c_str(), better.test_loss);

    // The loss curves of both runs, then each loaded model's predictions, side by side.
    ember::plot::figure fig(18, 5);
    ember::plot::plot_history(
        fig.subplot(1, 3, 1), history,
        {.columns = {"sgd_train_loss", "sgd_val_loss", "adam_train_loss", "adam_val_loss"},
         .labels = {"SGD train", "SGD validation", "Adam train", "Adam validation"},
         .colors = {"#1f77b4", "#aec7e8", "#d62728", "#ff9896"},
         .ylabel = "Loss (MSE)"});
    const auto [X_train, y_train] = train_set;
    const auto [X_val, y_val] = val_set;
    for (std::size_t k = 0; k < loaded.size(); ++k)
    {
        auto& ax = fig.subplot(1, 3, static_cast<int>(k) + 2);
        scatter_splits(ax, X_train, y_train, X_val, y_val, X_test, y_test);
        char label[64];
        std::snprintf(label, sizeof label, "Learned: y=%.2fX+%.2f", loaded[k].weight,
                      loaded[k].bias);
        ax.plot(column(X), loaded[k].predictions, {.label = label, .color = "r", .width = 2});
        ax.plot(column(X), column(y),
                {.label = "True: y=0.7X+0.3", .color = "g", .width = 2, .dashed = true});
        ax.xlabel("X").ylabel("y").title(loaded[k].title + " Predictions").legend().grid(true, 0.3);
    }
    fig.save("compare_optimizers.svg");
    std::printf("\nFigure saved to compare_optimizers.svg, losses to compare_optimizers.csv\n");
    return 0;
}

int main()
{
    return run_reporting_errors(run);
}
