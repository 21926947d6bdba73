// Training tools: gradient clipping against PyTorch 1.13 (tests/golden/training_tools.hpp, from
// scripts/golden_schedulers.py) on the device the suite is built for; accuracy, MAE and MSE
// against PyTorch; CSV loading with its errors; the progress bar on a terminal and on a plain
// stream, with an injected clock; and the per-epoch history with its CSV file.
#include "golden/training_tools.hpp"
#include "test_device.hpp"
#include "test_files.hpp"

#include <ember/data/csv.hpp>
#include <ember/data/dataset.hpp>
#include <ember/history.hpp>
#include <ember/metrics.hpp>
#include <ember/nn/clip_grad.hpp>
#include <ember/progress.hpp>

#include <boost/test/unit_test.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

using namespace ember;
namespace gold = golden::training_tools;
namespace fs = std::filesystem;

namespace
{

bool message_has(const std::exception& e, const std::string& part)
{
    const bool ok = std::string(e.what()).find(part) != std::string::npos;
    if (!ok)
        BOOST_TEST_MESSAGE("message: " << e.what());
    return ok;
}

auto has(std::string part)
{
    return [part](const ember::error& e) { return message_has(e, part); };
}

bool near(double a, double b, double rel)
{
    if (a == b || (std::isnan(a) && std::isnan(b)))
        return true;
    return std::fabs(a - b) <= rel * std::max(std::fabs(a), std::fabs(b));
}

// Three parameters of the golden shapes on the test device, grads set from the golden.
template <class T>
struct grads
{
    nn::parameter<T, 2, test_device> p0{test::dtensor<T, 2>::from_shape({3, 4})};
    nn::parameter<T, 1, test_device> p1{test::dtensor<T, 1>::from_shape({5})};
    nn::parameter<T, 2, test_device> p2{test::dtensor<T, 2>::from_shape({2, 2})};

    std::vector<nn::param_ref<T, test_device>> refs()
    {
        return {nn::param_ref<T, test_device>(p0), nn::param_ref<T, test_device>(p1),
                nn::param_ref<T, test_device>(p2)};
    }
    static const std::vector<std::vector<double>>& golden()
    {
        if constexpr (std::is_same_v<T, float>)
            return gold::grads_f32;
        else
            return gold::grads_f64;
    }
    void set(const std::vector<std::vector<double>>& g)
    {
        auto refs_ = refs();
        for (std::size_t k = 0; k < 3; ++k)
        {
            std::vector<T> h(g[k].begin(), g[k].end());
            test_device::upload(h.data(), h.size(), refs_[k].grad().data());
        }
    }
    grads() { set(golden()); }
    std::vector<std::vector<double>> get()
    {
        std::vector<std::vector<double>> out;
        for (auto& r : refs())
        {
            std::vector<T> h(r.grad().size());
            test_device::download(r.grad().data(), h.size(), h.data());
            out.emplace_back(h.begin(), h.end());
        }
        return out;
    }
};

// float32: PyTorch sums a float32 norm in float32, ember in double; a few ulps apart at most.
template <class T>
constexpr double tolerance = std::is_same_v<T, float> ? 4e-7 : (test::exact ? 1e-15 : 1e-14);

// The shared scratch folder, with a way to write a text file into it.
struct temp_dir : test::temp_dir
{
    fs::path write(const std::string& name, const std::string& text) const
    {
        std::ofstream(path / name, std::ios::binary) << text;
        return path / name;
    }
};

} // namespace

// ---- gradient clipping ----

using float_types = std::tuple<float, double>;

BOOST_AUTO_TEST_CASE_TEMPLATE(clip_grad_norm_matches_pytorch_for_every_norm_type, T, float_types)
{
    const auto& cases = std::is_same_v<T, float> ? gold::clip_norm_f32 : gold::clip_norm_f64;
    for (const auto& c : cases)
    {
        grads<T> g;
        const T total = nn::clip_grad_norm_(g.refs(), c.max_norm, c.norm_type);
        BOOST_CHECK_MESSAGE(near(total, c.total_norm, tolerance<T>),
                            c.name << ": total norm " << total << ", PyTorch " << c.total_norm);
        const auto clipped = g.get();
        for (std::size_t k = 0; k < 3; ++k)
            for (std::size_t i = 0; i < clipped[k].size(); ++i)
                BOOST_CHECK_MESSAGE(near(clipped[k][i], c.clipped[k][i], 2 * tolerance<T>),
                                    c.name << ": grad " << k << "[" << i << "] = " << clipped[k][i]
                                           << ", PyTorch " << c.clipped[k][i] << " (coef " << c.coef
                                           << ")");
    }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(clip_grad_value_matches_pytorch, T, float_types)
{
    grads<T> g;
    nn::clip_grad_value_(g.refs(), gold::clip_value);
    const auto& expected = std::is_same_v<T, float> ? gold::clip_value_f32 : gold::clip_value_f64;
    const auto got = g.get();
    for (std::size_t k = 0; k < 3; ++k)
        BOOST_TEST(got[k] == expected[k], boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(frozen_parameters_are_neither_counted_nor_clipped)
{
    grads<double> g;
    g.p1.requires_grad = false;
    const double total = nn::clip_grad_norm_(g.refs(), 0.5);
    double sq = 0;
    for (std::size_t k : {0, 2})
        for (double x : gold::grads_f64[k])
            sq += x * x;
    BOOST_TEST(near(total, std::sqrt(sq), 1e-14));
    BOOST_TEST(g.get()[1] == gold::grads_f64[1], boost::test_tools::per_element());
    BOOST_TEST(std::fabs(g.get()[0][9]) < std::fabs(gold::grads_f64[0][9]));

    g.set(gold::grads_f64);
    nn::clip_grad_value_(g.refs(), 0.1);
    BOOST_TEST(g.get()[1] == gold::grads_f64[1], boost::test_tools::per_element());

    // Nothing to clip: PyTorch returns 0.
    g.p0.requires_grad = g.p2.requires_grad = false;
    BOOST_TEST(nn::clip_grad_norm_(g.refs(), 1.0) == 0.0);
    BOOST_TEST(nn::clip_grad_norm_(std::vector<nn::param_ref<double, test_device>>{}, 1.0) == 0.0);
}

BOOST_AUTO_TEST_CASE(a_non_finite_norm_is_an_error_only_when_asked)
{
    grads<float> g;
    std::vector<std::vector<double>> bad = gold::grads_f32;
    bad[1][2] = std::numeric_limits<double>::quiet_NaN();
    g.set(bad);
    BOOST_CHECK_EXCEPTION(nn::clip_grad_norm_(g.refs(), 1.0, 2.0, true), value_error,
                          has("non-finite"));
    // Unchanged by the refused call.
    const auto after = g.get();
    BOOST_TEST(after[0] == bad[0], boost::test_tools::per_element());
    // As PyTorch: the NaN norm is returned and spreads to every gradient.
    BOOST_TEST(std::isnan(nn::clip_grad_norm_(g.refs(), 1.0)));
    for (const auto& grad : g.get())
        for (double x : grad)
            BOOST_TEST(std::isnan(x));
    // The infinity norm carries NaN too, and clip_grad_value_ leaves NaN as it is.
    g.set(bad);
    BOOST_TEST(std::isnan(nn::clip_grad_norm_(g.refs(), 1.0, INFINITY)));
    g.set(bad);
    nn::clip_grad_value_(g.refs(), 0.3);
    BOOST_TEST(std::isnan(g.get()[1][2]));
    BOOST_TEST(g.get()[0][9] == 0.3f);
}

BOOST_AUTO_TEST_CASE(bad_clipping_arguments_are_refused)
{
    grads<double> g;
    BOOST_CHECK_EXCEPTION(nn::clip_grad_norm_(g.refs(), -1.0), value_error, has("max_norm"));
    BOOST_CHECK_EXCEPTION(nn::clip_grad_norm_(g.refs(), 1.0, NAN), value_error, has("norm_type"));
    BOOST_CHECK_EXCEPTION(nn::clip_grad_value_(g.refs(), -0.5), value_error, has("clip_value"));
    const auto got = g.get();
    for (std::size_t k = 0; k < 3; ++k)
        BOOST_TEST(got[k] == gold::grads_f64[k], boost::test_tools::per_element());
}

// ---- metrics ----

BOOST_AUTO_TEST_CASE(metrics_match_pytorch)
{
    tensor<double, 2> scores = tensor<double, 2>::from_shape({gold::n, gold::classes});
    std::copy(gold::scores.begin(), gold::scores.end(), scores.begin());
    tensor<std::int64_t, 1> labels = tensor<std::int64_t, 1>::from_shape({gold::n});
    std::copy(gold::labels.begin(), gold::labels.end(), labels.begin());
    BOOST_TEST(metrics::accuracy(scores, labels) == gold::accuracy);
    tensor<float, 2> scores32 = xt::cast<float>(scores);
    BOOST_TEST(metrics::accuracy(scores32, labels) == gold::accuracy);

    tensor<double, 1> probs = tensor<double, 1>::from_shape({gold::n});
    std::copy(gold::probs.begin(), gold::probs.end(), probs.begin());
    tensor<double, 1> targets = tensor<double, 1>::from_shape({gold::n});
    std::copy(gold::binary_targets.begin(), gold::binary_targets.end(), targets.begin());
    BOOST_TEST(metrics::binary_accuracy(probs, targets) == gold::binary_accuracy);
    BOOST_TEST(metrics::binary_accuracy(probs, targets, 0.7) == gold::binary_accuracy_07);
    tensor<std::int64_t, 1> int_targets = xt::cast<std::int64_t>(targets);
    BOOST_TEST(metrics::binary_accuracy(probs, int_targets) == gold::binary_accuracy);

    tensor<double, 2> pred = tensor<double, 2>::from_shape({gold::n, 3});
    tensor<double, 2> truth = tensor<double, 2>::from_shape({gold::n, 3});
    std::copy(gold::pred.begin(), gold::pred.end(), pred.begin());
    std::copy(gold::truth.begin(), gold::truth.end(), truth.begin());
    // PyTorch sums in another order: equal to the last bits.
    BOOST_TEST(near(metrics::mean_absolute_error(pred, truth), gold::mae, 1e-15));
    BOOST_TEST(near(metrics::mean_squared_error(pred, truth), gold::mse, 1e-15));
    tensor<float, 2> pred32 = xt::cast<float>(pred);
    tensor<float, 2> truth32 = xt::cast<float>(truth);
    BOOST_TEST(near(metrics::mean_absolute_error(pred32, truth32), gold::mae_f32, 1e-15));
    BOOST_TEST(near(metrics::mean_squared_error(pred32, truth32), gold::mse_f32, 1e-15));
}

BOOST_AUTO_TEST_CASE(accuracy_breaks_ties_and_treats_nan_as_torch_argmax_does)
{
    const std::size_t rows = gold::tie_argmax.size();
    tensor<double, 2> scores = tensor<double, 2>::from_shape({rows, 3});
    std::copy(gold::tie_scores.begin(), gold::tie_scores.end(), scores.begin());
    for (std::size_t r = 0; r < rows; ++r)
        for (std::int64_t c = 0; c < 3; ++c)
        {
            tensor<double, 2> row = tensor<double, 2>::from_shape({1, 3});
            std::copy_n(scores.data() + r * 3, 3, row.data());
            tensor<std::int64_t, 1> label = {c};
            BOOST_TEST(metrics::accuracy(row, label) == (c == gold::tie_argmax[r] ? 1.0 : 0.0),
                       "row " << r << " label " << c);
        }
}

BOOST_AUTO_TEST_CASE(metrics_refuse_what_cannot_be_scored)
{
    tensor<double, 2> scores = {{0.1, 0.9}, {0.8, 0.2}};
    BOOST_CHECK_EXCEPTION(metrics::accuracy(scores, tensor<std::int64_t, 1>{1, 2}), value_error,
                          has("labels[1] = 2 is not a class index in [0, 2)"));
    BOOST_CHECK_EXCEPTION(metrics::accuracy(scores, tensor<std::int64_t, 1>{1, 0, 1}), shape_error,
                          has("expected labels [2]"));
    BOOST_CHECK_EXCEPTION(
        metrics::binary_accuracy(tensor<double, 1>{0.2, 0.7}, tensor<double, 1>{0, 0.5}),
        value_error, has("targets[1] = 0.5"));
    BOOST_CHECK_EXCEPTION(
        metrics::mean_squared_error(tensor<double, 2>{{1, 2}}, tensor<double, 2>{{1}, {2}}),
        shape_error, has("[1, 2]"));
    BOOST_CHECK_EXCEPTION(metrics::mean_absolute_error(tensor<double, 1>::from_shape({0}),
                                                       tensor<double, 1>::from_shape({0})),
                          value_error, has("no samples"));
}

// ---- CSV ----

BOOST_AUTO_TEST_CASE(read_csv_reads_a_header_and_numbers)
{
    temp_dir dir;
    const auto path = dir.write("houses.csv", "area,rooms,price\n"
                                              "50,2,100.5\n"
                                              " 72.5 , 3 ,-1e3\n"
                                              "\n"
                                              "+80,4,nan\n");
    const auto table = data::read_csv_table<double>(path);
    BOOST_TEST((table.names == std::vector<std::string>{"area", "rooms", "price"}));
    BOOST_TEST((table.values.shape() == std::array<std::size_t, 2>{3, 3}));
    BOOST_TEST(table.values(1, 0) == 72.5);
    BOOST_TEST(table.values(1, 2) == -1000.0);
    BOOST_TEST(table.values(2, 0) == 80.0);
    BOOST_TEST(std::isnan(table.values(2, 2)));

    // float32 is float64 rounded, as pandas then .astype(float32).
    const auto f = data::read_csv<float>(path);
    BOOST_TEST(f(0, 2) == static_cast<float>(100.5));

    // Columns by name and by index, in the order asked.
    const auto some = data::read_csv<double>(path, {.columns = {"price", 0}});
    BOOST_TEST((some.shape() == std::array<std::size_t, 2>{3, 2}));
    BOOST_TEST(some(0, 0) == 100.5);
    BOOST_TEST(some(0, 1) == 50.0);
}

BOOST_AUTO_TEST_CASE(read_csv_handles_delimiters_quotes_crlf_bom_and_no_header)
{
    temp_dir dir;
    const auto path = dir.write("data.txt", "\xEF\xBB\xBF"
                                            "1;\"2.5\";3\r\n"
                                            "4 ; \"-5\" ;6\r\n");
    const auto t = data::read_csv<double>(path, {.delimiter = ';', .header = false});
    BOOST_TEST((t == tensor<double, 2>{{1, 2.5, 3}, {4, -5, 6}}));

    const auto tabs = dir.write("tabs.tsv", "x\t\"a \"\"quoted\"\" name, with comma\"\n1\t2\n");
    const auto table = data::read_csv_table<std::int64_t>(tabs, {.delimiter = '\t'});
    BOOST_TEST(table.names[1] == "a \"quoted\" name, with comma");
    BOOST_TEST(table.values(0, 1) == 2);
    BOOST_TEST(table.column_index("a \"quoted\" name, with comma") == 1u);

    // Only a header: no rows. An empty file without a header: nothing at all.
    const auto header_only = data::read_csv<float>(dir.write("h.csv", "a,b\n"));
    BOOST_TEST((header_only.shape() == std::array<std::size_t, 2>{0, 2}));
    const auto nothing = data::read_csv<float>(dir.write("e.csv", ""), {.header = false});
    BOOST_TEST(nothing.size() == 0u);
}

BOOST_AUTO_TEST_CASE(read_csv_reads_a_file_that_reports_no_size_to_its_end)
{
    // /proc's files report a size of 0; this one holds one number and a newline.
    const std::filesystem::path proc = "/proc/self/oom_score_adj";
    if (!std::filesystem::exists(proc))
        return; // not Linux
    BOOST_REQUIRE(std::filesystem::file_size(proc) == 0u);
    std::ifstream in(proc);
    double expected = 0;
    BOOST_REQUIRE(in >> expected);
    const auto t = data::read_csv<double>(proc, {.header = false});
    BOOST_TEST((t.shape() == std::array<std::size_t, 2>{1, 1}));
    BOOST_TEST(t(0, 0) == expected);
}

BOOST_AUTO_TEST_CASE(read_csv_errors_name_the_file_line_and_column)
{
    temp_dir dir;
    const auto ragged = dir.write("ragged.csv", "a,b\n1,2\n3\n");
    BOOST_CHECK_EXCEPTION(data::read_csv<float>(ragged), format_error,
                          has("ragged.csv:3: 1 fields, expected 2 (as in the header on line 1)"));
    const auto word = dir.write("word.csv", "a,b\n1,2\n3,abc\n");
    BOOST_CHECK_EXCEPTION(data::read_csv<float>(word), format_error,
                          has("word.csv:3: column 'b' (index 1): cannot read \"abc\" as a number"));
    const auto empty_field = dir.write("gap.csv", "1,,3\n");
    BOOST_CHECK_EXCEPTION(data::read_csv<double>(empty_field, {.header = false}), format_error,
                          has("gap.csv:1: column index 1: the field is empty"));
    const auto huge = dir.write("huge.csv", "x\n1e39\n");
    BOOST_CHECK_EXCEPTION(data::read_csv<float>(huge), format_error,
                          has("huge.csv:2: column 'x' (index 0): \"1e39\" is out of range for "
                              "float32"));
    BOOST_CHECK_EXCEPTION(data::read_csv<std::int64_t>(dir.write("f.csv", "x\n1.5\n")),
                          format_error, has("cannot read \"1.5\" as int64"));
    BOOST_CHECK_EXCEPTION(data::read_csv<float>(dir.write("q.csv", "\"a,b\n")), format_error,
                          has("q.csv:1: a quoted field has no closing quote"));
    BOOST_CHECK_EXCEPTION(data::read_csv<float>(dir.write("z.csv", "")), format_error,
                          has("the file is empty (expected a header row)"));
    BOOST_CHECK_EXCEPTION(data::read_csv<float>(dir.path / "missing.csv"), io_error,
                          has("missing.csv"));

    const auto ok = dir.write("ok.csv", "a,b\n1,2\n");
    BOOST_CHECK_EXCEPTION(data::read_csv<float>(ok, {.columns = {"c"}}), key_error,
                          has("no column 'c' (the columns are 'a', 'b')"));
    BOOST_CHECK_EXCEPTION(data::read_csv<float>(ok, {.columns = {5}}), value_error,
                          has("column index 5 is out of range for 2 columns"));
    BOOST_CHECK_EXCEPTION(data::read_csv<float>(ok, {.header = false, .columns = {"a"}}),
                          value_error, has("there is no header row"));
    BOOST_CHECK_EXCEPTION(
        data::read_csv<float>(dir.write("dup.csv", "a,a\n1,2\n"), {.columns = {"a"}}), value_error,
        has("appears more than once"));
}

BOOST_AUTO_TEST_CASE(read_csv_reads_float32s_largest_value_as_numpy_prints_it)
{
    // numpy prints float32's largest value 3.4028235e+38, which as a double lies above it but
    // rounds to it; only what rounds to infinity in float32 is out of its range.
    temp_dir dir;
    const auto path = dir.write("max.csv", "x\n3.4028235e+38\n-3.4028235e+38\n3.40282356e38\n");
    const auto t = data::read_csv<float>(path);
    const float max = std::numeric_limits<float>::max();
    BOOST_TEST((t == tensor<float, 2>{{max}, {-max}, {max}}));
    BOOST_CHECK_EXCEPTION(data::read_csv<float>(dir.write("over.csv", "x\n3.4028236e38\n")),
                          format_error,
                          has("over.csv:2: column 'x' (index 0): \"3.4028236e38\" is out of "
                              "range for float32"));
}

BOOST_AUTO_TEST_CASE(read_csv_reads_numbers_too_small_for_a_double_as_zero)
{
    // As Python's float() and pandas read them: 1e-400 is 0.0, not out of range.
    temp_dir dir;
    const auto path = dir.write("tiny.csv", "x\n1e-400\n-1e-400\n0.0001e-321\n"
                                            "1000e-99999999999999999999999\n");
    const auto t = data::read_csv<double>(path);
    BOOST_TEST((t == tensor<double, 2>{{0}, {0}, {0}, {0}}));
    BOOST_TEST(!std::signbit(t(0, 0)));
    BOOST_TEST(std::signbit(t(1, 0)));
    BOOST_TEST((data::read_csv<float>(path) == tensor<float, 2>{{0}, {0}, {0}, {0}}));
    // Too large stays an error, even where the exponent is negative.
    BOOST_CHECK_EXCEPTION(
        data::read_csv<double>(dir.write("big.csv", "x\n1e400\n")), format_error,
        has("big.csv:2: column 'x' (index 0): \"1e400\" is out of range for float64"));
    BOOST_CHECK_EXCEPTION(
        data::read_csv<double>(dir.write("big2.csv", "x\n1" + std::string(420, '0') + "e-5\n")),
        format_error, has("is out of range for float64"));
}

BOOST_AUTO_TEST_CASE(read_csv_takes_a_lone_carriage_return_for_a_line_end)
{
    // Classic Mac OS line ends, as pandas reads them; a \r kept inside a line made the whole
    // file one header line and no rows.
    temp_dir dir;
    const auto table = data::read_csv_table<double>(dir.write("mac.csv", "a,b\r1,2\r\r3,4\r"));
    BOOST_TEST((table.names == std::vector<std::string>{"a", "b"}));
    BOOST_TEST((table.values == tensor<double, 2>{{1, 2}, {3, 4}}));
    const auto mixed = data::read_csv<double>(dir.write("mixed.csv", "a,b\r\n1,2\r3,4\n5,6"));
    BOOST_TEST((mixed == tensor<double, 2>{{1, 2}, {3, 4}, {5, 6}}));
    BOOST_CHECK_EXCEPTION(data::read_csv<float>(dir.write("r.csv", "a,b\r1,2\r\n3\r")),
                          format_error,
                          has("r.csv:3: 1 fields, expected 2 (as in the header on line 1)"));
}

BOOST_AUTO_TEST_CASE(read_csv_errors_quote_a_bad_field_short_and_printable)
{
    // A NUL inside a field cut the message short where it is printed as a C string, and a bad
    // field of a megabyte became a message of a megabyte.
    temp_dir dir;
    const auto nul = dir.write("nul.csv", std::string("x\n1\0\x01"
                                                      "2\n",
                                                      7));
    BOOST_CHECK_EXCEPTION(data::read_csv<float>(nul), format_error,
                          has("nul.csv:2: column 'x' (index 0): cannot read \"1\\x00\\x012\" as "
                              "a number"));
    const auto long_field = dir.write("long.csv", "x\n" + std::string(1 << 20, 'z') + "\n");
    BOOST_CHECK_EXCEPTION(data::read_csv<float>(long_field), format_error,
                          [](const format_error& e)
                          {
                              const std::string what = e.what();
                              return what.size() < 300 &&
                                     what.find("\"" + std::string(64, 'z') +
                                               "\"... (1048576 bytes) as a number") !=
                                         std::string::npos;
                          });
}

BOOST_AUTO_TEST_CASE(read_csv_errors_quote_header_names_printable_and_list_at_most_twenty)
{
    // A NUL in a header name (a UTF-16 file has one a character) cut the message short.
    temp_dir dir;
    const auto nul = dir.write("nul_header.csv", std::string("a\0b,c\n1,x\n", 10));
    BOOST_CHECK_EXCEPTION(data::read_csv<float>(nul), format_error,
                          has("nul_header.csv:2: column 'c' (index 1): cannot read \"x\""));
    const auto bad = dir.write("bad.csv", std::string("a\0b,c\nx,1\n", 10));
    BOOST_CHECK_EXCEPTION(data::read_csv<float>(bad), format_error,
                          has("column 'a\\x00b' (index 0): cannot read \"x\" as a number"));
    std::string wide, row;
    for (int i = 0; i < 30; ++i)
    {
        wide += (i ? ",c" : "c") + std::to_string(i);
        row += i ? ",0" : "0";
    }
    const auto many = dir.write("many.csv", wide + "\n" + row + "\n");
    BOOST_CHECK_EXCEPTION(data::read_csv<float>(many, {.columns = {"z"}}), key_error,
                          has("no column 'z' (the columns are 'c0', 'c1', 'c2', 'c3', 'c4', 'c5', "
                              "'c6', 'c7', 'c8', 'c9', 'c10', 'c11', 'c12', 'c13', 'c14', 'c15', "
                              "'c16', 'c17', 'c18', 'c19', ... (30 in all))"));
}

BOOST_AUTO_TEST_CASE(read_csv_calls_a_number_with_text_after_it_unreadable_not_out_of_range)
{
    temp_dir dir;
    BOOST_CHECK_EXCEPTION(data::read_csv<float>(dir.write("x.csv", "x\n1e999x\n")), format_error,
                          has("x.csv:2: column 'x' (index 0): cannot read \"1e999x\" as a number"));
    BOOST_CHECK_EXCEPTION(
        data::read_csv<std::int64_t>(dir.write("i.csv", "x\n99999999999999999999x\n")),
        format_error, has("cannot read \"99999999999999999999x\" as int64"));
    BOOST_CHECK_EXCEPTION(
        data::read_csv<std::int64_t>(dir.write("j.csv", "x\n99999999999999999999\n")), format_error,
        has("\"99999999999999999999\" is out of range for int64"));
}

BOOST_AUTO_TEST_CASE(read_csv_with_tabs_for_delimiter_reads_a_line_of_tabs_as_empty_fields)
{
    // A line holding only the delimiter is fields, not a blank line to pass over.
    temp_dir dir;
    BOOST_CHECK_EXCEPTION(
        data::read_csv<float>(dir.write("t.tsv", "a\tb\n1\t2\n\t\n"), {.delimiter = '\t'}),
        format_error, has("t.tsv:3: column 'a' (index 0): the field is empty"));
    // Spaces alone are still a blank line, with tabs or commas between fields.
    const auto spaced =
        data::read_csv<float>(dir.write("s.tsv", "a\tb\n1\t2\n   \n3\t4\n"), {.delimiter = '\t'});
    BOOST_TEST((spaced == tensor<float, 2>{{1, 2}, {3, 4}}));
}

BOOST_AUTO_TEST_CASE(split_columns_gives_features_and_targets_for_a_tensor_dataset)
{
    temp_dir dir;
    const auto table = data::read_csv_table<float>(
        dir.write("h.csv", "area,price,rooms\n50,100,2\n70,150,3\n90,210,4\n"));
    auto [X, y] = data::split_columns(table, {"price"});
    BOOST_TEST((X == tensor<float, 2>{{50, 2}, {70, 3}, {90, 4}}));
    BOOST_TEST((y == tensor<float, 2>{{100}, {150}, {210}}));
    data::tensor_dataset ds(std::move(X), std::move(y));
    BOOST_TEST(ds.size() == 3u);

    auto [f, t] = data::split_columns(table, {"rooms", 0}, {1});
    BOOST_TEST((f == tensor<float, 2>{{2, 50}, {3, 70}, {4, 90}}));
    BOOST_TEST((t == tensor<float, 2>{{100}, {150}, {210}}));

    BOOST_CHECK_EXCEPTION(data::split_columns(table, {"price", 1}), value_error,
                          has("'price' (index 1) is listed twice"));
    BOOST_CHECK_EXCEPTION(data::split_columns(table, {0, 1, 2}), value_error,
                          has("no feature column"));
    BOOST_CHECK_EXCEPTION(data::split_columns(table, {"area"}, {"area"}), value_error,
                          has("listed twice"));
}

// ---- progress ----

namespace
{

struct fake_clock
{
    double t = 100;
    std::function<double()> fn()
    {
        return [this] { return t; };
    }
};

} // namespace

BOOST_AUTO_TEST_CASE(progress_prints_plain_lines_when_not_on_a_terminal)
{
    std::ostringstream out;
    fake_clock clock;
    progress_bar bar(2, 4,
                     {.out = &out, .line_interval = 30, .line_every = 2, .clock = clock.fn()});
    BOOST_TEST(!bar.terminal()); // a string stream is no terminal
    bar.begin_epoch(0);
    for (int i = 0; i < 4; ++i)
    {
        clock.t += 1;
        bar.update(1.0 + i, 10); // running mean 1, 1.5, 2, 2.5
    }
    BOOST_TEST(bar.end_epoch({{"val_loss", 0.5}, {"acc", 0.875}}) == 2.5);
    bar.begin_epoch(1);
    clock.t += 31; // past line_interval: a line even between every-2 batches
    bar.update(4.0, 10);
    BOOST_TEST(out.str() == "Epoch 1/2 2/4 loss 1.5 10 samples/s eta 0:06\n"
                            "Epoch 1/2 4/4 loss 2.5 10 samples/s 0:04 val_loss 0.5 acc 0.875\n"
                            "Epoch 2/2 1/4 loss 4 0.323 samples/s eta 0:21\n");
}

BOOST_AUTO_TEST_CASE(progress_redraws_one_line_on_a_terminal)
{
    std::ostringstream out;
    fake_clock clock;
    progress_bar bar(
        1, 3,
        {.out = &out, .terminal = true, .min_interval = 0.5, .bar_width = 6, .clock = clock.fn()});
    bar.begin_epoch(0);
    clock.t += 0.25;
    bar.update(2.0, 100); // too soon to redraw
    clock.t += 0.75;
    bar.update(1.0, 100);
    clock.t += 0.1;
    bar.update(0.5, 100); // the last batch always draws
    bar.end_epoch();
    BOOST_TEST(out.str() == "\rEpoch 1/1 [>     ] 0/3"
                            "\rEpoch 1/1 [====> ] 2/3 loss 1.5 200 samples/s eta 0:01"
                            "\rEpoch 1/1 [======] 3/3 loss 1.167 273 samples/s eta 0:00"
                            "\rEpoch 1/1 [======] 3/3 loss 1.167 273 samples/s 0:01    \n");
}

BOOST_AUTO_TEST_CASE(progress_blanks_what_a_longer_line_left)
{
    std::ostringstream out;
    fake_clock clock;
    progress_bar bar(10, 0,
                     {.out = &out, .terminal = true, .min_interval = 0, .clock = clock.fn()});
    bar.begin_epoch(9);
    clock.t += 1;
    bar.update(123456.0, 1000);
    clock.t += 1000;
    bar.update(0.0, 1);
    const std::string s = out.str();
    const std::string second = "\rEpoch 10/10 1 loss 1.235e+05 1000 samples/s";
    const std::string third = "\rEpoch 10/10 2 loss 1.233e+05 1 samples/s";
    const auto at = s.find(third);
    BOOST_REQUIRE(at != std::string::npos);
    // The third line is 3 characters shorter than the second: 3 blanks cover what is left.
    BOOST_TEST(s.substr(at) == third + "   ");
    BOOST_TEST(s.substr(0, s.find(second)) == "\rEpoch 10/10 0");
}

BOOST_AUTO_TEST_CASE(progress_ignores_the_loss_of_a_batch_without_samples)
{
    // The epoch's loss is weighted by samples: an empty batch's loss (NaN, the mean of nothing)
    // weighs nothing, and 0 * NaN must not make the whole epoch's loss NaN.
    std::ostringstream out;
    fake_clock clock;
    progress_bar bar(1, 3, {.out = &out, .clock = clock.fn()});
    bar.begin_epoch(0);
    bar.update(std::numeric_limits<double>::quiet_NaN(), 0);
    bar.update(1.0, 4);
    bar.update(2.0, 4);
    BOOST_TEST(bar.end_epoch() == 1.5);
}

// ---- history ----

BOOST_AUTO_TEST_CASE(history_keeps_named_columns_per_epoch)
{
    history h;
    h.append({{"epoch", 0}, {"train_loss", 0.5}});
    h.append({{"epoch", 1}, {"train_loss", 0.25}, {"val_loss", 0.3}});
    h.append({{"val_loss", 0.1}, {"epoch", 2}});
    BOOST_TEST(h.size() == 3u);
    BOOST_TEST((h.names() == std::vector<std::string>{"epoch", "train_loss", "val_loss"}));
    BOOST_TEST(std::isnan(h["val_loss"][0]));
    BOOST_TEST(h["val_loss"][1] == 0.3);
    BOOST_TEST(std::isnan(h["train_loss"][2]));
    BOOST_TEST(h.last("epoch") == 2.0);
    BOOST_CHECK_EXCEPTION(
        h["lr"], key_error,
        has("no column 'lr' (the columns are 'epoch', 'train_loss', 'val_loss')"));
    BOOST_CHECK_EXCEPTION(h.append({{"a", 1}, {"a", 2}}), value_error, has("given twice"));
    BOOST_CHECK_EXCEPTION(h.append({{"b", 1}, {"", 2}}), value_error, has("cannot be empty"));
    // A row of no values: it would count in size() but not survive save_csv or to_value().
    BOOST_CHECK_EXCEPTION(h.append(std::span<const std::pair<std::string, double>>{}), value_error,
                          has("the row has no values"));
    BOOST_TEST(h.size() == 3u); // the refused rows added nothing
    BOOST_TEST(!h.contains("b"));
}

BOOST_AUTO_TEST_CASE(history_saves_csv_that_reads_back_exactly)
{
    temp_dir dir;
    history h;
    h.append({{"epoch", 1}, {"loss", 0.1}});
    h.append({{"epoch", 2}, {"loss", 1.0 / 3}, {"val, loss", -1e-300}});
    h.append({{"epoch", 3}, {"loss", INFINITY}});
    const fs::path path = dir.path / "history.csv";
    h.save_csv(path);
    std::ifstream f(path);
    const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    BOOST_TEST(text == "epoch,loss,\"val, loss\"\n"
                       "1,0.1,nan\n"
                       "2,0.3333333333333333,-1e-300\n"
                       "3,inf,nan\n");
    const history back = history::load_csv(path);
    BOOST_TEST((back == h));
    BOOST_TEST((history::from_value(h.to_value()) == h));

    BOOST_CHECK_EXCEPTION(h.save_csv(dir.path / "no" / "such" / "dir.csv"), io_error,
                          has("dir.csv"));
    BOOST_CHECK_EXCEPTION(history::from_value(value(1)), value_error, has("expected a dict"));
}

BOOST_AUTO_TEST_CASE(history_without_rows_saves_and_loads_back_empty)
{
    // save_csv writes an empty history as a header without names, a blank line; load_csv
    // refused that as an empty file.
    temp_dir dir;
    const history empty;
    const fs::path path = dir.path / "history.csv";
    empty.save_csv(path);
    const history back = history::load_csv(path);
    BOOST_TEST(back.empty());
    BOOST_TEST(back.names().empty());
    BOOST_TEST((back == empty));
    // Any other file that is not CSV with a header is still refused.
    BOOST_CHECK_EXCEPTION(history::load_csv(dir.write("ragged.csv", "a,b\n1\n")), format_error,
                          has("ragged.csv:2: 1 fields, expected 2"));
}

BOOST_AUTO_TEST_CASE(history_from_value_refuses_the_names_append_refuses)
{
    // A name with a line break cannot be a CSV header (save_csv would write a file load_csv
    // refuses), and an empty one is no name: from_value checks them as append does.
    value::dict broken;
    broken.insert("a\nb", value::list{value(1.0)});
    BOOST_CHECK_EXCEPTION(history::from_value(broken), value_error, has("has a line break"));
    value::dict unnamed;
    unnamed.insert("", value::list{value(1.0)});
    BOOST_CHECK_EXCEPTION(history::from_value(unnamed), value_error, has("cannot be empty"));
}
