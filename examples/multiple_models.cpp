// The lesson's exercise 1 (shared/seed/saving_and_loading_models.md): "Train models with
// different learning rates, save each, and compare their predictions." The lesson's linear
// regression, its data and seed, trained for 100 epochs with SGD at lr 0.001, 0.01 and 0.1;
// each model saved as a state_dict in PyTorch's format, loaded back into a fresh model, and the
// loaded models' predictions compared in a table and in one figure.
//
//   build/examples/multiple_models      writes model_lr_0.001.pth, model_lr_0.01.pth,
//                                       model_lr_0.1.pth, multiple_models.svg and
//                                       multiple_models.csv (the losses per epoch) here
#include <ember/ember.hpp>
#include <ember/plot/history.hpp>

#include <cstdio>
#include <string>
#include <vector>

#include "lesson_model.hpp"

using dataset = ember::data::tensor_dataset<ember::tensor<float, 2>, ember::tensor<float, 2>>;

constexpr double learning_rates[] = {0.001, 0.01, 0.1};
constexpr int epochs = 100;

// "0.001", "0.01", "0.1": the learning rate as the file name and the legend write it.
std::string lr_name(double lr)
{
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", lr);
    return buf;
}

int run()
{
    // The lesson's data: y = 0.7 X + 0.3 on X = 0, 0.02, ..., 0.98, split 70/15/15 in order.
    const float weight = 0.7f, bias = 0.3f;
    const auto [X, y] = make_lesson_data(weight, bias);
    const dataset data(X, y);
    const auto [train, val, test] = ember::data::split(data, {0.7, 0.15, 0.15});
    const auto [X_train, y_train] = ember::data::materialize(train);
    const auto [X_val, y_val] = ember::data::materialize(val);
    const auto [X_test, y_test] = ember::data::materialize(test);
    std::printf("Train: %zu, Val: %zu, Test: %zu\n", train.size(), val.size(), test.size());

    // One history for the three runs: epoch, then train and val loss of each learning rate.
    ember::history history;
    std::vector<std::vector<std::pair<std::string, double>>> rows(epochs);
    for (int epoch = 0; epoch < epochs; ++epoch)
        rows[epoch].emplace_back("epoch", epoch);

    ember::nn::mse_loss<float> criterion;
    for (const double lr : learning_rates)
    {
        // The same start for every run: the lesson's seed before the model draws its parameters.
        ember::manual_seed(42);
        LinearRegressionModel<> model;
        ember::optim::sgd optimizer(model.parameters(), {.lr = lr});
        std::printf("\nTraining with lr = %s for %d epochs...\n", lr_name(lr).c_str(), epochs);
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
            rows[epoch].emplace_back("train_loss_lr_" + lr_name(lr), loss);
            rows[epoch].emplace_back("val_loss_lr_" + lr_name(lr), val_loss);
            if (epoch % 20 == 0)
                std::printf("Epoch %3d: Train Loss = %.4f, Val Loss = %.4f\n", epoch, loss,
                            val_loss);
        }
        const std::string path = "model_lr_" + lr_name(lr) + ".pth";
        ember::save(model.state_dict(), path);
        std::printf("Model saved to '%s'\n", path.c_str());
    }
    for (const auto& row : rows)
        history.append(row);
    history.save_csv("multiple_models.csv");

    // Load each file into a fresh model (a different seed: nothing is left of the training) and
    // compare what the loaded models predict.
    ember::manual_seed(0);
    const ember::tensor<float, 2> new_data = {{0.25f}, {0.5f}, {0.75f}};
    std::printf("\nLoaded models, predictions for new data and test loss:\n");
    std::printf("  %-7s %8s %8s %10s %10s %10s %11s\n", "lr", "weight", "bias", "X = 0.25",
                "X = 0.50", "X = 0.75", "test loss");
    std::vector<std::vector<double>> curves;
    std::vector<std::string> labels;
    double best_loss = 0, best_lr = 0;
    for (const double lr : learning_rates)
    {
        LinearRegressionModel<> loaded;
        loaded.load_state_dict(ember::load<ember::state_dict>("model_lr_" + lr_name(lr) + ".pth"));
        loaded.eval();
        ember::no_grad guard;
        const auto predictions = loaded(new_data); // a copy: the next forward reuses the buffer
        const float test_loss = criterion(loaded(X_test), y_test);
        std::printf("  %-7s %8.4f %8.4f %10.4f %10.4f %10.4f %11.6f\n", lr_name(lr).c_str(),
                    loaded.weight.item(), loaded.bias.item(), predictions(0, 0), predictions(1, 0),
                    predictions(2, 0), test_loss);
        if (curves.empty() || test_loss < best_loss)
            best_loss = test_loss, best_lr = lr;
        curves.push_back(column(loaded(X)));
        char label[64];
        std::snprintf(label, sizeof label, "lr=%s: y=%.2fX+%.2f", lr_name(lr).c_str(),
                      loaded.weight.item(), loaded.bias.item());
        labels.emplace_back(label);
    }
    std::printf("  %-7s %8.4f %8.4f %10.4f %10.4f %10.4f\n", "true", weight, bias,
                weight * 0.25f + bias, weight * 0.5f + bias, weight * 0.75f + bias);
    std::printf("\nLowest test loss: lr = %s (%.6f)\n", lr_name(best_lr).c_str(), best_loss);

    // The figure: each run's validation loss, and the three loaded models against the data.
    const std::vector<std::string> colors = {"#ff7f0e", "#9467bd", "#17becf"};
    ember::plot::figure fig(12, 5);
    std::vector<std::string> val_columns, val_labels;
    for (const double lr : learning_rates)
    {
        val_columns.push_back("val_loss_lr_" + lr_name(lr));
        val_labels.push_back("lr=" + lr_name(lr));
    }
    ember::plot::plot_history(fig.subplot(1, 2, 1), history,
                              {.columns = val_columns,
                               .labels = val_labels,
                               .colors = colors,
                               .ylabel = "Validation loss (MSE)",
                               .title = "Validation Loss by Learning Rate"});
    auto& preds = fig.subplot(1, 2, 2);
    scatter_splits(preds, X_train, y_train, X_val, y_val, X_test, y_test);
    for (std::size_t k = 0; k < curves.size(); ++k)
        preds.plot(column(X), curves[k], {.label = labels[k], .color = colors[k], .width = 2});
    preds.plot(column(X), column(y),
               {.label = "True: y=0.7X+0.3", .color = "k", .width = 1.5, .dashed = true});
    preds.xlabel("X").ylabel("y").title("Loaded Models' Predictions").legend().grid(true, 0.3);
    fig.save("multiple_models.svg");
    std::printf("\nFigure saved to multiple_models.svg, losses to multiple_models.csv\n");
    return 0;
}

int main()
{
    return run_reporting_errors(run);
}
