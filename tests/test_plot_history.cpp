// ember::plot::plot_history: a history's curves in a figure, and the ways a caller gets it wrong.
#include <boost/test/unit_test.hpp>

#include "ember/plot/history.hpp"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

namespace
{
ember::history lesson_history(std::size_t epochs)
{
    ember::history h;
    for (std::size_t e = 0; e < epochs; ++e)
        h.append({{"epoch", static_cast<double>(e)},
                  {"train_loss", 1.0 / static_cast<double>(e + 1)},
                  {"val_loss", 2.0 / static_cast<double>(e + 1)},
                  {"val_accuracy", 0.5 + 0.01 * static_cast<double>(e)}});
    return h;
}

std::size_t count(const std::string& text, const std::string& what)
{
    std::size_t n = 0;
    for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1))
        ++n;
    return n;
}

// The number of points in the n-th polyline of an SVG.
std::size_t polyline_points(const std::string& svg, std::size_t n)
{
    auto at = svg.find("<polyline");
    for (std::size_t i = 0; i < n; ++i)
        at = svg.find("<polyline", at + 1);
    const auto begin = svg.find("points=\"", at) + 8;
    const auto end = svg.find('"', begin);
    return count(svg.substr(begin, end - begin), ",");
}
} // namespace

BOOST_AUTO_TEST_CASE(draws_the_loss_columns_by_default_as_train_and_validation)
{
    ember::plot::figure fig;
    ember::plot::plot_history(fig.subplot(1, 1, 1), lesson_history(10));
    const std::string svg = fig.to_svg();
    BOOST_TEST(count(svg, "<polyline") == 2u); // train_loss and val_loss, not val_accuracy
    BOOST_TEST(polyline_points(svg, 0) == 10u);
    BOOST_TEST(count(svg, ">Train</text>") == 1u);
    BOOST_TEST(count(svg, ">Validation</text>") == 1u);
    BOOST_TEST(count(svg, ">Training Progress</text>") == 1u);
    BOOST_TEST(count(svg, ">Epoch</text>") == 1u);
    BOOST_TEST(count(svg, ">Loss</text>") == 1u);
}

BOOST_AUTO_TEST_CASE(draws_the_columns_labels_and_colors_it_is_given)
{
    ember::plot::figure fig;
    ember::plot::plot_history(fig.subplot(1, 1, 1), lesson_history(5),
                              {.columns = {"val_accuracy"},
                               .labels = {"accuracy on val"},
                               .colors = {"#123456"},
                               .ylabel = "Accuracy",
                               .title = "Accuracy"});
    const std::string svg = fig.to_svg();
    BOOST_TEST(count(svg, "<polyline") == 1u);
    BOOST_TEST(count(svg, "stroke=\"#123456\"") == 2u); // the line and its legend entry
    BOOST_TEST(count(svg, ">accuracy on val</text>") == 1u);
    BOOST_TEST(count(svg, ">Accuracy</text>") == 2u); // title and y label
    BOOST_TEST(count(svg, ">Loss</text>") == 0u);
}

BOOST_AUTO_TEST_CASE(leaves_out_the_epochs_where_a_column_is_nan)
{
    ember::history h = lesson_history(4);
    h.append({{"epoch", 4.0}, {"train_loss", 0.1}}); // no val_loss this epoch
    h.append({{"epoch", 5.0}, {"train_loss", 0.1}, {"test_loss", 0.3}});
    ember::plot::figure fig;
    ember::plot::plot_history(fig.subplot(1, 1, 1), h);
    const std::string svg = fig.to_svg();
    BOOST_TEST(count(svg, "<polyline") == 3u);
    BOOST_TEST(polyline_points(svg, 0) == 6u); // train_loss
    BOOST_TEST(polyline_points(svg, 1) == 4u); // val_loss
    BOOST_TEST(polyline_points(svg, 2) == 1u); // test_loss
    BOOST_TEST(count(svg, ">Test</text>") == 1u);
    BOOST_TEST(svg.find("nan") == std::string::npos);
}

BOOST_AUTO_TEST_CASE(counts_epochs_from_zero_without_an_epoch_column)
{
    ember::history h;
    h.append({{"loss", 3.0}});
    h.append({{"loss", 2.0}});
    ember::plot::figure fig;
    ember::plot::plot_history(fig.subplot(1, 1, 1), h, {.x = "step", .xlabel = "Step"});
    const std::string svg = fig.to_svg();
    BOOST_TEST(polyline_points(svg, 0) == 2u);
    BOOST_TEST(count(svg, ">Step</text>") == 1u);
    BOOST_TEST(count(svg, ">loss</text>") == 1u);
}

BOOST_AUTO_TEST_CASE(a_missing_column_is_a_key_error_naming_it)
{
    ember::plot::axes ax;
    try
    {
        ember::plot::plot_history(ax, lesson_history(3), {.columns = {"val_los"}});
        BOOST_FAIL("no exception");
    }
    catch (const ember::key_error& e)
    {
        const std::string what = e.what();
        BOOST_TEST(what.find("'val_los'") != std::string::npos, what);
        BOOST_TEST(what.find("'val_loss'") != std::string::npos, what); // what there is
    }
}

BOOST_AUTO_TEST_CASE(labels_or_colors_not_one_per_column_are_a_value_error)
{
    ember::plot::axes ax;
    BOOST_CHECK_THROW(ember::plot::plot_history(ax, lesson_history(3), {.labels = {"only one"}}),
                      ember::value_error);
    BOOST_CHECK_THROW(ember::plot::plot_history(ax, lesson_history(3),
                                                {.columns = {"train_loss"}, .colors = {"r", "g"}}),
                      ember::value_error);
}

BOOST_AUTO_TEST_CASE(a_history_without_losses_needs_its_columns_named)
{
    ember::history h;
    h.append({{"epoch", 0.0}, {"accuracy", 0.9}});
    ember::plot::axes ax;
    try
    {
        ember::plot::plot_history(ax, h);
        BOOST_FAIL("no exception");
    }
    catch (const ember::value_error& e)
    {
        const std::string what = e.what();
        BOOST_TEST(what.find("'accuracy'") != std::string::npos, what);
        BOOST_TEST(what.find("options.columns") != std::string::npos, what);
    }
    BOOST_CHECK_THROW(ember::plot::plot_history(ax, ember::history{}), ember::value_error);
}

BOOST_AUTO_TEST_CASE(labels_name_the_split_and_the_metric)
{
    BOOST_TEST(ember::plot::history_label("train_loss") == "Train");
    BOOST_TEST(ember::plot::history_label("val_loss") == "Validation");
    BOOST_TEST(ember::plot::history_label("test_accuracy") == "Test accuracy");
    BOOST_TEST(ember::plot::history_label("train_top_5") == "Train top 5");
    BOOST_TEST(ember::plot::history_label("lr") == "lr");
    BOOST_TEST(ember::plot::history_label("training_loss") == "training_loss");
}

BOOST_AUTO_TEST_CASE(a_panel_stays_usable_after_more_panels_are_added)
{
    // matplotlib's habit: take every panel first, draw into them afterwards.
    ember::plot::figure fig(12, 5);
    auto& first = fig.subplot(1, 3, 1);
    auto& second = fig.subplot(1, 3, 2);
    auto& third = fig.subplot(1, 3, 3);
    const std::vector<double> y{1, 2, 3};
    first.plot(y, {.label = "first"}).title("First");
    second.plot(y, {.label = "second"}).title("Second");
    third.plot(y, {.label = "third"}).title("Third");
    const std::string svg = fig.to_svg();
    for (const char* t : {"First", "Second", "Third"})
        BOOST_TEST(svg.find(t) != std::string::npos, t);
}

BOOST_AUTO_TEST_CASE(values_near_the_limits_of_double_still_give_finite_coordinates)
{
    // The span of ±1e308 overflows a double; the axes used it for margins and scales and
    // wrote "nan" into the figure (found by an adversarial review).
    for (const std::vector<double>& ys :
         {std::vector<double>{1e308, -1e308}, std::vector<double>{-1.7e308, 1.7e308},
          std::vector<double>{1e300, 1e301}, std::vector<double>{0.0, 1e-320},
          std::vector<double>{0.0, 4.9e-324}, std::vector<double>{-4.9e-324, 4.9e-324}})
    {
        ember::plot::figure fig(6, 4);
        fig.subplot(1, 1, 1).plot(ys).grid();
        const std::string svg = fig.to_svg();
        BOOST_TEST(svg.find("nan") == std::string::npos, ys[0] << ", " << ys[1]);
        BOOST_TEST(svg.find("inf") == std::string::npos, ys[0] << ", " << ys[1]);
        BOOST_TEST(polyline_points(svg, 0) == 2u);
    }
}
