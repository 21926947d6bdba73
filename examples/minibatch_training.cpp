// The lesson's exercise 5 (shared/seed/saving_and_loading_models.md): "Modify the code to use
// mini-batch training instead of full-batch." The lesson's workflow — data, model, MSE, SGD at
// lr 0.01, 100 epochs with validation, save, load, evaluate, the figure — with the training set
// served by a data_loader in shuffled mini-batches of 8 (5 optimizer steps per epoch instead of
// one), a progress bar on stderr, and the run's history written as CSV. The lesson's full-batch
// run is trained beside it for comparison.
//
//   build/examples/minibatch_training     writes minibatch_model.pth, minibatch_training.csv
//                                         and minibatch_training.svg here
#include <ember/ember.hpp>
#include <ember/plot/history.hpp>
#include <ember/progress.hpp>

#include <cstdio>
#include <vector>

#include "lesson_model.hpp"

using dataset = ember::data::tensor_dataset<ember::tensor<float, 2>, ember::tensor<float, 2>>;

constexpr double learning_rate = 0.01;
constexpr std::size_t epochs = 100;
// DataLoader(train, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(42))
constexpr ember::data::data_loader_options loader_options{
    .batch_size = 8, .shuffle = true, .seed = 42};

int run()
{
    // ============================================
    // 1. Setup and 2. Prepare Data
    // ============================================
    const float weight = 0.7f, bias = 0.3f;
    const auto [X, y] = make_lesson_data(weight, bias);
    const dataset data(X, y);
    const auto [train, val, test] = ember::data::split(data, {0.7, 0.15, 0.15});
    const auto [X_train, y_train] = ember::data::materialize(train);
    const auto [X_val, y_val] = ember::data::materialize(val);
    const auto [X_test, y_test] = ember::data::materialize(test);

    ember::data::data_loader loader(train, loader_options);
    std::printf("Train: %zu, Val: %zu, Test: %zu\n", train.size(), val.size(), test.size());
    std::printf("Mini-batches of %zu, shuffled: %zu batches per epoch\n", loader_options.batch_size,
                loader.size());

    // ============================================
    // 3. Build Model
    // ============================================
    ember::manual_seed(42);
    LinearRegressionModel<> model;
    ember::nn::mse_loss<float> criterion;
    ember::optim::sgd optimizer(model.parameters(), {.lr = learning_rate});

    // ============================================
    // 4. Train Model, one optimizer step per mini-batch
    // ============================================
    ember::history history;
    ember::progress_bar bar(epochs, loader.size());
    std::int64_t steps = 0;
    std::printf("\nTraining for %zu epochs...\n", epochs);
    for (std::size_t epoch = 0; epoch < epochs; ++epoch)
    {
        model.train();
        bar.begin_epoch(epoch);
        for (const auto& [x, target] : loader)
        {
            const float loss = criterion(model(x), target);
            optimizer.zero_grad();
            model.backward(criterion.backward());
            optimizer.step();
            ++steps;
            bar.update(loss, x.shape()[0]);
        }

        model.eval();
        float val_loss;
        {
            ember::no_grad guard;
            val_loss = criterion(model(X_val), y_val);
        }
        // The epoch's training loss: the mean over its samples (batches weighted by their size).
        const double train_loss = bar.end_epoch({{"val_loss", val_loss}});
        history.append({{"epoch", static_cast<double>(epoch)},
                        {"train_loss", train_loss},
                        {"val_loss", val_loss}});
        if (epoch % 20 == 0)
            std::printf("Epoch %3zu: Train Loss = %.4f, Val Loss = %.4f\n", epoch, train_loss,
                        val_loss);
    }
    history.save_csv("minibatch_training.csv");
    std::printf("History saved to 'minibatch_training.csv'\n");

    // ============================================
    // 5. Save Model, 6. Load and Evaluate
    // ============================================
    ember::save(model.state_dict(), "minibatch_model.pth");
    std::printf("Model saved to 'minibatch_model.pth'\n");
    LinearRegressionModel<> loaded_model;
    loaded_model.load_state_dict(ember::load<ember::state_dict>("minibatch_model.pth"));
    loaded_model.eval();

    // The lesson's full-batch run, for comparison: one step per epoch on all 35 samples.
    ember::manual_seed(42);
    LinearRegressionModel<> full_batch;
    ember::optim::sgd full_optimizer(full_batch.parameters(), {.lr = learning_rate});
    std::vector<double> full_val_losses;
    for (std::size_t epoch = 0; epoch < epochs; ++epoch)
    {
        full_batch.train();
        criterion(full_batch(X_train), y_train);
        full_optimizer.zero_grad();
        full_batch.backward(criterion.backward());
        full_optimizer.step();
        full_batch.eval();
        ember::no_grad guard;
        full_val_losses.push_back(criterion(full_batch(X_val), y_val));
    }

    ember::no_grad guard;
    const float test_loss = criterion(loaded_model(X_test), y_test);
    const float full_test_loss = criterion(full_batch(X_test), y_test);
    std::printf("\nFinal Results (true: weight %g, bias %g):\n", weight, bias);
    std::printf("  %-22s %8s %8s %11s %6s\n", "", "weight", "bias", "test loss", "steps");
    std::printf("  %-22s %8.4f %8.4f %11.6f %6lld\n", "mini-batch (loaded)",
                loaded_model.weight.item(), loaded_model.bias.item(), test_loss,
                static_cast<long long>(steps));
    std::printf("  %-22s %8.4f %8.4f %11.6f %6zu\n", "full-batch (lesson)",
                full_batch.weight.item(), full_batch.bias.item(), full_test_loss, epochs);

    const ember::tensor<float, 2> new_data = {{0.25f}, {0.5f}, {0.75f}};
    const auto predictions = loaded_model(new_data);
    std::printf("\nPredictions for new data:\n");
    for (std::size_t i = 0; i < new_data.shape(0); ++i)
        std::printf("  X = %.2f -> y = %.4f\n", new_data(i, 0), predictions(i, 0));

    // ============================================
    // 7. Visualize Results
    // ============================================
    ember::plot::figure fig(12, 5);
    auto& curves =
        ember::plot::plot_history(fig.subplot(1, 2, 1), history, {.ylabel = "Loss (MSE)"});
    curves.plot(
        full_val_losses,
        {.label = "Validation, full-batch", .color = "#7f7f7f", .width = 1.5, .dashed = true});

    char learned[64], full_learned[64];
    std::snprintf(learned, sizeof learned, "Mini-batch: y=%.2fX+%.2f", loaded_model.weight.item(),
                  loaded_model.bias.item());
    std::snprintf(full_learned, sizeof full_learned, "Full-batch: y=%.2fX+%.2f",
                  full_batch.weight.item(), full_batch.bias.item());
    const std::vector<double> y_full = column(full_batch(X));
    const std::vector<double> y_plot = column(loaded_model(X));
    auto& preds = fig.subplot(1, 2, 2);
    scatter_splits(preds, X_train, y_train, X_val, y_val, X_test, y_test);
    preds.plot(column(X), y_plot, {.label = learned, .color = "r", .width = 2});
    preds.plot(column(X), y_full, {.label = full_learned, .color = "#7f7f7f", .width = 1.5});
    preds.plot(column(X), column(y),
               {.label = "True: y=0.7X+0.3", .color = "g", .width = 2, .dashed = true});
    preds.xlabel("X").ylabel("y").title("Final Predictions").legend().grid(true, 0.3);
    fig.save("minibatch_training.svg");
    std::printf("\nFigure saved to minibatch_training.svg\n");
    return 0;
}

int main()
{
    return run_reporting_errors(run);
}
