// The lesson's "What's Next" (shared/seed/saving_and_loading_models.md): a multi-class
// classifier. Three interleaved spirals of 300 points each, drawn by ember's generator, split
// 80/20 into training and test sets; a multi-layer perceptron (Linear, ReLU, Linear, ReLU,
// Linear) trained on mini-batches with cross-entropy (softmax over the three logits) and Adam,
// its learning rate halved by a StepLR scheduler; the model saved, loaded, and its test accuracy
// measured. The figure draws the loaded model's decision regions under the data, beside the loss
// and accuracy curves.
//
//   build/examples/classification     writes classification_model.pth, classification.csv and
//                                     classification.svg here; exits 1 below 95% test accuracy
#include <ember/ember.hpp>
#include <ember/metrics.hpp>
#include <ember/plot/history.hpp>
#include <ember/progress.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <numbers>
#include <string>
#include <vector>

namespace nn = ember::nn;

using dataset =
    ember::data::tensor_dataset<ember::tensor<float, 2>, ember::tensor<std::int64_t, 1>>;

constexpr std::size_t classes = 3;
constexpr std::size_t points_per_class = 300;
constexpr std::size_t epochs = 200;
constexpr double required_accuracy = 0.95;

// Spiral k: the radius grows from 0 to 1 while the angle turns one and a half times from
// 2πk/3, with normal noise of 0.15 radians on the angle: three arms that wind around each other.
dataset make_spirals(ember::generator& g)
{
    const std::size_t n = classes * points_per_class;
    ember::tensor<float, 2> X = ember::tensor<float, 2>::from_shape({n, 2});
    ember::tensor<std::int64_t, 1> y = ember::tensor<std::int64_t, 1>::from_shape({n});
    for (std::size_t k = 0; k < classes; ++k)
        for (std::size_t i = 0; i < points_per_class; ++i)
        {
            const double r = static_cast<double>(i) / (points_per_class - 1);
            const double t = 2 * std::numbers::pi * static_cast<double>(k) / classes +
                             3 * std::numbers::pi * r + 0.15 * g.normal();
            const std::size_t row = k * points_per_class + i;
            X(row, 0) = static_cast<float>(r * std::sin(t));
            X(row, 1) = static_cast<float>(r * std::cos(t));
            y(row) = static_cast<std::int64_t>(k);
        }
    return dataset(std::move(X), std::move(y));
}

auto make_model()
{
    return nn::sequential{nn::linear(2, 64), nn::relu(), nn::linear(64, 64), nn::relu(),
                          nn::linear(64, classes)};
}
using model_type = decltype(make_model());

struct evaluation
{
    double loss, accuracy;
};

// Loss and accuracy on a whole set, in eval mode without gradients.
evaluation evaluate(model_type& model, nn::cross_entropy_loss<float>& criterion,
                    const dataset::batch_type& set)
{
    const auto& [x, labels] = set;
    model.eval();
    ember::no_grad guard;
    const auto& logits = model(x);
    return {criterion(logits, labels), ember::metrics::accuracy(logits, labels)};
}

// The decision regions: the class the model picks at each point of a grid × grid lattice over
// [lo, hi]², as the points' coordinates per class.
struct regions
{
    std::vector<std::vector<double>> x, y;
};
regions decision_regions(model_type& model, double lo, double hi, std::size_t grid)
{
    ember::tensor<float, 2> points = ember::tensor<float, 2>::from_shape({grid * grid, 2});
    for (std::size_t i = 0; i < grid; ++i)
        for (std::size_t j = 0; j < grid; ++j)
        {
            const double step = (hi - lo) / static_cast<double>(grid - 1);
            points(i * grid + j, 0) = static_cast<float>(lo + step * static_cast<double>(j));
            points(i * grid + j, 1) = static_cast<float>(lo + step * static_cast<double>(i));
        }
    model.eval();
    ember::no_grad guard;
    const auto& logits = model(points);
    regions out{std::vector<std::vector<double>>(classes),
                std::vector<std::vector<double>>(classes)};
    for (std::size_t p = 0; p < grid * grid; ++p)
    {
        std::size_t best = 0;
        for (std::size_t c = 1; c < classes; ++c)
            if (logits(p, c) > logits(p, best))
                best = c;
        out.x[best].push_back(points(p, 0));
        out.y[best].push_back(points(p, 1));
    }
    return out;
}

int run()
{
    // Data: the spirals from a generator of their own, so that the model's initialisation
    // (from the default generator) does not depend on them.
    ember::generator data_generator(0);
    const dataset data = make_spirals(data_generator);
    const auto [train, test] = ember::data::random_split(data, {0.8, 0.2}, data_generator);
    const auto train_set = ember::data::materialize(train);
    const auto test_set = ember::data::materialize(test);
    ember::data::data_loader loader(train, {.batch_size = 32, .shuffle = true, .seed = 42});
    std::printf("Data: %zu spirals of %zu points; train %zu, test %zu\n", classes, points_per_class,
                train.size(), test.size());

    ember::manual_seed(42);
    model_type model = make_model();
    std::size_t parameters = 0;
    for (const auto& p : model.parameters())
        parameters += p.value().size();
    std::printf("Model: Linear(2, 64) -> ReLU -> Linear(64, 64) -> ReLU -> Linear(64, %zu), "
                "%zu parameters\n",
                classes, parameters);
    nn::cross_entropy_loss<float> criterion;
    ember::optim::adam optimizer(model.parameters(), {.lr = 0.01});
    ember::optim::step_lr scheduler(optimizer, {.step_size = 50, .gamma = 0.5});

    std::printf("\nTraining for %zu epochs (Adam, lr 0.01 halved every 50 epochs, batches of "
                "%zu)...\n",
                epochs, loader.options().batch_size);
    ember::history history;
    ember::progress_bar bar(epochs, loader.size());
    for (std::size_t epoch = 0; epoch < epochs; ++epoch)
    {
        const double lr = scheduler.get_last_lr()[0];
        model.train();
        bar.begin_epoch(epoch);
        for (const auto& [x, labels] : loader)
        {
            const float loss = criterion(model(x), labels);
            optimizer.zero_grad();
            model.backward(criterion.backward());
            optimizer.step();
            bar.update(loss, x.shape()[0]);
        }
        scheduler.step();
        const evaluation on_train = evaluate(model, criterion, train_set);
        const evaluation on_test = evaluate(model, criterion, test_set);
        bar.end_epoch({{"test_loss", on_test.loss}, {"test_accuracy", on_test.accuracy}});
        history.append({{"epoch", static_cast<double>(epoch)},
                        {"train_loss", on_train.loss},
                        {"test_loss", on_test.loss},
                        {"train_accuracy", on_train.accuracy},
                        {"test_accuracy", on_test.accuracy},
                        {"lr", lr}});
        if (epoch % 40 == 0 || epoch + 1 == epochs)
            std::printf("Epoch %3zu: Train Loss = %.4f, Test Loss = %.4f, Train Acc = %.2f%%, "
                        "Test Acc = %.2f%%\n",
                        epoch, on_train.loss, on_test.loss, 100 * on_train.accuracy,
                        100 * on_test.accuracy);
    }
    history.save_csv("classification.csv");
    std::printf("History saved to 'classification.csv'\n");

    ember::save(model.state_dict(), "classification_model.pth");
    std::printf("Model saved to 'classification_model.pth'\n");

    // A fresh model with the saved parameters: what inference elsewhere would do.
    model_type loaded = make_model();
    loaded.load_state_dict(ember::load<ember::state_dict>("classification_model.pth"));
    const evaluation final_test = evaluate(loaded, criterion, test_set);
    const auto& test_labels = std::get<1>(test_set);
    std::printf("\nLoaded model on the %zu test points:\n", test_labels.size());
    std::printf("  Test loss: %.4f\n", final_test.loss);
    std::printf("  Test accuracy: %.2f%% (%zu of %zu)\n", 100 * final_test.accuracy,
                static_cast<std::size_t>(std::lround(final_test.accuracy * test_labels.size())),
                test_labels.size());

    // Decision regions under the data, then the curves.
    const std::vector<std::string> light = {"#aec7e8", "#ffbb78", "#98df8a"};
    const std::vector<std::string> dark = {"#1f77b4", "#ff7f0e", "#2ca02c"};
    ember::plot::figure fig(17, 5.5);
    auto& ax = fig.subplot(1, 3, 1);
    // 60 x 60 cells over [-1.1, 1.1]²: a point every ~7 pixels, drawn with radius 5 so that
    // they tile the panel.
    const regions r = decision_regions(loaded, -1.1, 1.1, 60);
    for (std::size_t c = 0; c < classes; ++c)
        ax.scatter(r.x[c], r.y[c], {.color = light[c], .marker_size = 5});
    const auto& [train_x, train_labels] = train_set;
    const auto& test_x = std::get<0>(test_set);
    for (std::size_t c = 0; c < classes; ++c)
    {
        std::vector<double> xs, ys, test_xs, test_ys;
        for (std::size_t i = 0; i < train_labels.size(); ++i)
            if (train_labels(i) == static_cast<std::int64_t>(c))
                xs.push_back(train_x(i, 0)), ys.push_back(train_x(i, 1));
        for (std::size_t i = 0; i < test_labels.size(); ++i)
            if (test_labels(i) == static_cast<std::int64_t>(c))
                test_xs.push_back(test_x(i, 0)), test_ys.push_back(test_x(i, 1));
        ax.scatter(xs, ys,
                   {.label = "class " + std::to_string(c), .color = dark[c], .marker_size = 2.5});
        // Test points outlined: a black disc under the class's colour.
        ax.scatter(
            test_xs, test_ys,
            {.label = c + 1 == classes ? "test points" : "", .color = "#000000", .marker_size = 4});
        ax.scatter(test_xs, test_ys, {.color = dark[c], .marker_size = 2.5});
    }
    char title[64];
    std::snprintf(title, sizeof title, "Decision Regions (test accuracy %.1f%%)",
                  100 * final_test.accuracy);
    ax.xlabel("x1").ylabel("x2").title(title).legend();
    ember::plot::plot_history(fig.subplot(1, 3, 2), history,
                              {.ylabel = "Cross-entropy loss", .title = "Loss"});
    ember::plot::plot_history(fig.subplot(1, 3, 3), history,
                              {.columns = {"train_accuracy", "test_accuracy"},
                               .labels = {"Train", "Test"},
                               .ylabel = "Accuracy",
                               .title = "Accuracy"});
    fig.save("classification.svg");
    std::printf("\nFigure saved to classification.svg\n");

    if (final_test.accuracy < required_accuracy)
    {
        std::printf("FAIL: test accuracy %.2f%% is below %.0f%%\n", 100 * final_test.accuracy,
                    100 * required_accuracy);
        return 1;
    }
    std::printf("Test accuracy is at least %.0f%%\n", 100 * required_accuracy);
    return 0;
}

int main()
{
    try
    {
        return run();
    }
    catch (const ember::error& e)
    {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
