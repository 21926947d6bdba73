// Datasets, splits and the data loader: PyTorch's orders, the lesson's slices, reused batch
// buffers, and a loader state that resumes an epoch where it stopped.
#include <ember/data/data.hpp>

#include "golden/data.hpp"

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <new>
#include <set>
#include <span>
#include <string>
#include <vector>

// Counts every allocation through operator new (std::vector's, xtensor's), so that a test can
// check that later epochs make none.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete" // the pair below is malloc and free
#endif
namespace
{
long allocations = 0;
}
void* operator new(std::size_t n)
{
    ++allocations;
    if (void* p = std::malloc(n ? n : 1))
        return p;
    throw std::bad_alloc();
}
void operator delete(void* p) noexcept
{
    std::free(p);
}
void operator delete(void* p, std::size_t) noexcept
{
    std::free(p);
}

using namespace ember;
using data::tensor_dataset;

namespace
{

// A predicate for BOOST_CHECK_EXCEPTION: the message contains `part`.
auto has(std::string part)
{
    return [part](const ember::error& e)
    { return std::string(e.what()).find(part) != std::string::npos; };
}

using features_t = tensor<float, 2>;
using targets_t = tensor<std::int64_t, 1>;
using dataset_t = tensor_dataset<features_t, targets_t>;

// n samples: features row i = {i, 100 + i}, target i = i, so a batch tells which rows it holds.
dataset_t numbered(std::size_t n)
{
    features_t x = features_t::from_shape({n, 2});
    targets_t y = targets_t::from_shape({n});
    for (std::size_t i = 0; i < n; ++i)
    {
        x(i, 0) = static_cast<float>(i);
        x(i, 1) = static_cast<float>(100 + i);
        y(i) = static_cast<std::int64_t>(i);
    }
    return dataset_t(std::move(x), std::move(y));
}

template <class Batch>
std::vector<std::int64_t> ids(const Batch& batch)
{
    const auto& y = std::get<1>(batch);
    return std::vector<std::int64_t>(y.begin(), y.end());
}

// All sample ids of one epoch, checking along the way that features and targets agree.
template <class Loader>
std::vector<std::int64_t> epoch_ids(Loader& loader)
{
    std::vector<std::int64_t> all;
    for (const auto& [x, y] : loader)
    {
        BOOST_TEST_REQUIRE(x.shape()[0] == y.shape()[0]);
        for (std::size_t k = 0; k < y.size(); ++k)
        {
            BOOST_TEST_REQUIRE(x(k, 0) == static_cast<float>(y(k)));
            BOOST_TEST_REQUIRE(x(k, 1) == static_cast<float>(100 + y(k)));
            all.push_back(y(k));
        }
    }
    return all;
}

std::vector<std::int64_t> expected_ids(const std::int64_t* values, std::size_t size)
{
    return std::vector<std::int64_t>(values, values + size);
}
#define GOLDEN(name) expected_ids(golden::data::name, golden::data::name##_size)

template <class Subset>
std::vector<std::int64_t> subset_ids(const Subset& s)
{
    return std::vector<std::int64_t>(s.indices().begin(), s.indices().end());
}

std::vector<std::int64_t> range_ids(std::size_t from, std::size_t to)
{
    std::vector<std::int64_t> r;
    for (std::size_t i = from; i < to; ++i)
        r.push_back(static_cast<std::int64_t>(i));
    return r;
}

} // namespace

// ---------------------------------------------------------------- randperm

BOOST_AUTO_TEST_CASE(randperm_equals_torch_randperm)
{
    auto check = [](std::uint64_t seed, std::size_t n, std::vector<std::int64_t> expected)
    {
        generator g(seed);
        BOOST_TEST(randperm(n, g) == expected, "seed " << seed << ", n " << n);
    };
    check(0, 1, GOLDEN(randperm_seed0_n1));
    check(42, 2, GOLDEN(randperm_seed42_n2));
    check(42, 10, GOLDEN(randperm_seed42_n10));
    check(7, 50, GOLDEN(randperm_seed7_n50));
    check(123, 1000, GOLDEN(randperm_seed123_n1000));
}

// Where randperm changes its shuffle, n = 2^32 / 20: one below, PyTorch 1.13's (n - 1 draws of
// 32 bits); at it, PyTorch 2's inside-out shuffle (n draws of 64 bits; 1.13 has no such
// switch). The expected values are torch 1.13's and torch 2.15's, seed 42: the first and last
// elements, sum(i * p[i]) mod 2^64, and the generator's next randint(0, 2^31), which is
// random() % 2^31 in 1.13 and random64() % 2^31 in 2.15 (the n - 1 draws below the switch are
// 1.13's in 2.15 too: its randint there gives 1.13's value one 32-bit draw later). int32
// elements keep each permutation at 860 MB.
BOOST_AUTO_TEST_CASE(randperm_at_its_largest_sizes_shuffles_as_pytorch)
{
    struct expected
    {
        std::vector<std::int32_t> first, last;
        std::uint64_t weighted_sum;
        std::uint32_t next_draw;
        bool next_draw_is_64_bits;
    };
    auto check = [](std::size_t n, const expected& e)
    {
        generator g(42);
        std::vector<std::int32_t> p(n);
        randperm(std::span<std::int32_t>(p), g);
        BOOST_TEST(std::vector<std::int32_t>(p.begin(), p.begin() + 4) == e.first, "n " << n);
        BOOST_TEST(std::vector<std::int32_t>(p.end() - 2, p.end()) == e.last, "n " << n);
        std::uint64_t sum = 0;
        for (std::size_t i = 0; i < n; ++i)
            sum += i * static_cast<std::uint64_t>(p[i]);
        BOOST_TEST(sum == e.weighted_sum, "n " << n);
        const std::uint64_t next = e.next_draw_is_64_bits ? g.random64() : g.random();
        BOOST_TEST(next % (1u << 31) == e.next_draw, "n " << n);
    };
    BOOST_REQUIRE(detail::randperm_is_small(214748363) && !detail::randperm_is_small(214748364));
    check(214748363, {{105399001, 199900638, 3068019, 143601337},
                      {213603358, 104620125},
                      6924935676876048778u,
                      769403575,
                      false}); // torch 1.13
    check(214748364, {{85514504, 93417259, 199404010, 60269803},
                      {57301355, 144026194},
                      16756998223248140711u,
                      547463796,
                      true}); // torch 2.15
}

BOOST_AUTO_TEST_CASE(randperm_of_nothing_draws_nothing)
{
    generator g(3), untouched(3);
    BOOST_TEST(randperm(0, g).empty());
    BOOST_TEST(randperm(1, g) == std::vector<std::int64_t>{0});
    BOOST_TEST((g.state() == untouched.state()));
}

// ---------------------------------------------------------------- tensor_dataset

BOOST_AUTO_TEST_CASE(tensor_dataset_rejects_tensors_of_different_lengths)
{
    features_t x = features_t::from_shape({50, 1});
    tensor<float, 2> y = tensor<float, 2>::from_shape({49, 1});
    BOOST_CHECK_EXCEPTION(tensor_dataset(x, y), shape_error,
                          [](const shape_error& e)
                          {
                              const std::string m = e.what();
                              return m.find("tensor 1 of shape [49, 1]") != std::string::npos &&
                                     m.find("expected 50") != std::string::npos &&
                                     m.find("[50, 1]") != std::string::npos;
                          });
}

BOOST_AUTO_TEST_CASE(tensor_dataset_gathers_rows_in_the_order_asked)
{
    auto ds = numbered(6);
    BOOST_TEST(ds.size() == 6u);
    dataset_t::batch_type batch;
    const std::size_t idx[] = {4, 0, 4};
    ds.gather(idx, batch);
    const auto& [x, y] = batch;
    BOOST_TEST((x.shape()[0] == 3 && x.shape()[1] == 2));
    BOOST_TEST(ids(batch) == (std::vector<std::int64_t>{4, 0, 4}));
    BOOST_TEST(x(0, 1) == 104.0f);
    BOOST_TEST(x(1, 1) == 100.0f);
}

BOOST_AUTO_TEST_CASE(gathering_an_index_out_of_range_is_a_value_error)
{
    auto ds = numbered(5);
    dataset_t::batch_type batch;
    const std::size_t idx[] = {1, 5};
    BOOST_CHECK_EXCEPTION(ds.gather(idx, batch), value_error,
                          [](const value_error& e) {
                              return std::string(e.what()).find("index 5 is out of range for 5") !=
                                     std::string::npos;
                          });
}

BOOST_AUTO_TEST_CASE(materialize_gives_the_whole_dataset_as_one_batch)
{
    auto ds = numbered(7);
    auto [x, y] = data::materialize(ds);
    BOOST_TEST(x == ds.tensor<0>());
    BOOST_TEST(y == ds.tensor<1>());
}

// ---------------------------------------------------------------- splits

BOOST_AUTO_TEST_CASE(split_cuts_where_the_lessons_slicing_cuts)
{
    auto check = [](std::size_t n, std::vector<std::int64_t> sizes)
    {
        auto ds = numbered(n);
        auto [train, val, test] = data::split(ds, {0.7, 0.15, 0.15});
        const auto a = static_cast<std::size_t>(sizes[0]);
        const auto b = a + static_cast<std::size_t>(sizes[1]);
        BOOST_TEST(subset_ids(train) == range_ids(0, a), "n = " << n);
        BOOST_TEST(subset_ids(val) == range_ids(a, b), "n = " << n);
        BOOST_TEST(subset_ids(test) == range_ids(b, n), "n = " << n);
    };
    check(50, GOLDEN(lesson_split_n50_sizes)); // 35, 7, 8
    check(7, GOLDEN(lesson_split_n7_sizes));
    check(13, GOLDEN(lesson_split_n13_sizes));
    check(101, GOLDEN(lesson_split_n101_sizes));
}

BOOST_AUTO_TEST_CASE(split_by_counts_takes_consecutive_samples)
{
    auto ds = numbered(10);
    auto [a, b, c] = data::split(ds, {2, 0, 8});
    BOOST_TEST(subset_ids(a) == range_ids(0, 2));
    BOOST_TEST(b.size() == 0u);
    BOOST_TEST(subset_ids(c) == range_ids(2, 10));
}

BOOST_AUTO_TEST_CASE(shuffled_split_slices_torch_randperm_and_repeats_with_its_seed)
{
    auto ds = numbered(50);
    generator g(9);
    auto [train, val, test] = data::split(ds, {0.7, 0.15, 0.15}, g);
    BOOST_TEST(subset_ids(train) == GOLDEN(shuffled_split_seed9_part0));
    BOOST_TEST(subset_ids(val) == GOLDEN(shuffled_split_seed9_part1));
    BOOST_TEST(subset_ids(test) == GOLDEN(shuffled_split_seed9_part2));

    generator again(9), other(10);
    auto [train2, val2, test2] = data::split(ds, {0.7, 0.15, 0.15}, again);
    BOOST_TEST(subset_ids(train2) == subset_ids(train));
    auto [train3, val3, test3] = data::split(ds, {0.7, 0.15, 0.15}, other);
    BOOST_TEST(subset_ids(train3) != subset_ids(train));

    // Every sample lands in exactly one part.
    std::multiset<std::int64_t> all;
    for (const auto* part : {&train, &val, &test})
        for (auto i : part->indices())
            all.insert(static_cast<std::int64_t>(i));
    BOOST_TEST(all.size() == 50u);
    BOOST_TEST(std::set<std::int64_t>(all.begin(), all.end()).size() == 50u);
}

BOOST_AUTO_TEST_CASE(random_split_equals_torch_random_split)
{
    auto ds50 = numbered(50);
    generator g42(42);
    auto [a, b, c] = data::random_split(ds50, {0.7, 0.15, 0.15}, g42);
    BOOST_TEST(a.size() == 36u); // PyTorch's rule, not the lesson's 35
    BOOST_TEST(subset_ids(a) == GOLDEN(random_split_fractions_50_part0));
    BOOST_TEST(subset_ids(b) == GOLDEN(random_split_fractions_50_part1));
    BOOST_TEST(subset_ids(c) == GOLDEN(random_split_fractions_50_part2));

    auto ds10 = numbered(10);
    generator g(42);
    auto [d, e] = data::random_split(ds10, {3, 7}, g);
    BOOST_TEST(subset_ids(d) == GOLDEN(random_split_counts_10_part0));
    BOOST_TEST(subset_ids(e) == GOLDEN(random_split_counts_10_part1));

    auto ds7 = numbered(7);
    generator g3(3);
    auto [f, h] = data::random_split(ds7, {0.5, 0.5}, g3);
    BOOST_TEST(subset_ids(f) == GOLDEN(random_split_fractions_7_part0));
    BOOST_TEST(subset_ids(h) == GOLDEN(random_split_fractions_7_part1));
}

BOOST_AUTO_TEST_CASE(lengths_that_do_not_add_up_are_value_errors)
{
    auto ds = numbered(50);
    auto fails = [](auto&& f, const char* needle)
    {
        try
        {
            f();
        }
        catch (const value_error& e)
        {
            BOOST_TEST(std::string(e.what()).find(needle) != std::string::npos,
                       e.what() << " should say " << needle);
            return;
        }
        BOOST_ERROR("no value_error for " << needle);
    };
    fails([&] { data::split(ds, {35, 7, 7}); }, "add up to 49, which is neither");
    fails(
        [&] {
            data::split(ds, {0.7, 0.2, 0.15});
        },
        "add up to 1.0499999999999998, which is neither");
    fails([&] { data::random_split(ds, {1.5, -0.5}); }, "length at index 1 is -0.5");
    fails([&] { data::split(ds, {60, -10}); }, "length at index 1 is -10");
    fails([&] { data::split(ds, {0.5, 0.5, 0.0, 2.0, -2.0}); }, "length at index 4 is -2");
}

BOOST_AUTO_TEST_CASE(random_split_refuses_fractions_that_add_up_to_more_than_one)
{
    // 0.5 + 0.5000000005 is close enough to 1 for math.isclose, but PyTorch 1.13 takes lengths
    // for fractions only when they also add up to 1 or less (of 4e9 samples these would take
    // 2e9 + 2000000002, past the end of the permutation); then it takes them for counts, which
    // do not add up to the dataset's length: a ValueError.
    const std::size_t n = 4'000'000'000;
    const double lengths[] = {0.5, 0.5000000005};
    BOOST_CHECK_EXCEPTION(data::split_lengths(n, lengths, false), value_error,
                          has("random_split: fractions add up to 1.0000000005, more than 1"));
    // The same for sums that are over 1 by rounding alone: 0.4 + 0.2 + 0.3 + 0.1, added from
    // the left as Python's sum() adds them, is 1.0000000000000002 (PyTorch 1.13:
    // random_split(range(20), [0.4, 0.2, 0.3, 0.1]) raises ValueError), and 0.6 + 0.4 is 1.
    const double rounded_over[] = {0.4, 0.2, 0.3, 0.1};
    BOOST_CHECK_EXCEPTION(data::split_lengths(20, rounded_over, false), value_error,
                          has("fractions add up to 1.0000000000000002"));
    const double exact[] = {0.6, 0.4};
    BOOST_TEST((data::split_lengths(20, exact, false) == std::vector<std::size_t>{12, 8}));
    // The lesson's slicing clamps its cuts to the dataset.
    const auto sizes = data::split_lengths(n, lengths, true);
    BOOST_TEST(sizes[0] + sizes[1] == n);
}

BOOST_AUTO_TEST_CASE(subsets_gather_from_the_rows_they_name)
{
    auto ds = numbered(10);
    data::subset<dataset_t> s(ds, {7, 2, 9});
    dataset_t::batch_type batch;
    const std::size_t idx[] = {2, 0};
    s.gather(idx, batch);
    BOOST_TEST(ids(batch) == (std::vector<std::int64_t>{9, 7}));
    BOOST_CHECK_THROW((data::subset<dataset_t>(ds, {3, 10})), value_error);
}

// ---------------------------------------------------------------- data_loader

BOOST_AUTO_TEST_CASE(loader_covers_each_sample_once_per_epoch)
{
    auto ds = numbered(23);
    data::data_loader loader(ds, {.batch_size = 5, .shuffle = true, .seed = 1});
    BOOST_TEST(loader.size() == 5u);
    std::vector<std::vector<std::int64_t>> epochs;
    for (int e = 0; e < 3; ++e)
    {
        BOOST_TEST(loader.epoch() == e);
        auto got = epoch_ids(loader);
        BOOST_TEST(got.size() == 23u);
        auto sorted = got;
        std::sort(sorted.begin(), sorted.end());
        BOOST_TEST(sorted == range_ids(0, 23));
        epochs.push_back(got);
    }
    BOOST_TEST(loader.epoch() == 3);
    BOOST_TEST(epochs[0] != epochs[1]); // reshuffled every epoch
    BOOST_TEST(epochs[1] != epochs[2]);
}

BOOST_AUTO_TEST_CASE(unshuffled_loader_keeps_the_dataset_order)
{
    auto ds = numbered(7);
    data::data_loader loader(ds, {.batch_size = 3});
    BOOST_TEST(epoch_ids(loader) == range_ids(0, 7));
    std::vector<std::size_t> sizes;
    while (const auto* b = loader.next())
        sizes.push_back(std::get<0>(*b).shape()[0]);
    BOOST_TEST(sizes == (std::vector<std::size_t>{3, 3, 1}));
}

BOOST_AUTO_TEST_CASE(seeded_loader_shuffles_as_pytorch_with_a_seeded_generator)
{
    auto ds = numbered(10);
    data::data_loader keep(ds, {.batch_size = 3, .shuffle = true, .seed = 5});
    BOOST_TEST(epoch_ids(keep) == GOLDEN(loader_seed5_drop0_epoch0));
    BOOST_TEST(epoch_ids(keep) == GOLDEN(loader_seed5_drop0_epoch1));
    BOOST_TEST(epoch_ids(keep) == GOLDEN(loader_seed5_drop0_epoch2));

    data::data_loader drop(ds, {.batch_size = 3, .shuffle = true, .drop_last = true, .seed = 5});
    BOOST_TEST(epoch_ids(drop) == GOLDEN(loader_seed5_drop1_epoch0));
    BOOST_TEST(epoch_ids(drop) == GOLDEN(loader_seed5_drop1_epoch1));
    BOOST_TEST(epoch_ids(drop) == GOLDEN(loader_seed5_drop1_epoch2));
}

// PyTorch 1.13: g = Generator().manual_seed(42); train, _ = random_split(ds, [8, 2],
// generator=g); DataLoader(train, batch_size=8, shuffle=True, generator=g). The loader draws
// where the split left g, and g goes on from where the epochs left it.
BOOST_AUTO_TEST_CASE(a_loader_shares_a_generator_with_random_split_as_pytorch_does)
{
    auto ds = numbered(10);
    generator shared(42);
    auto [train, rest] = data::random_split(ds, {8.0, 2.0}, shared);
    data::data_loader loader(train, {.batch_size = 8, .shuffle = true, .generator = &shared});
    BOOST_TEST(&loader.random_source() == &shared);
    BOOST_TEST(epoch_ids(loader) == GOLDEN(loader_shared_generator_epoch0));
    BOOST_TEST(epoch_ids(loader) == GOLDEN(loader_shared_generator_epoch1));
    BOOST_TEST(rand<float>({1}, shared)(0) == golden::data::loader_shared_generator_rand_after);

    // The shared generator is the program's to save: state() holds None for it, and a state
    // from a seeded loader does not fit.
    BOOST_TEST(loader.state().as<value::dict>().at("generator").is_none());
    data::data_loader seeded(train, {.batch_size = 8, .shuffle = true, .seed = 1});
    BOOST_CHECK_EXCEPTION(loader.load_state(seeded.state()), value_error,
                          has("this one draws from a shared generator"));
    BOOST_CHECK_EXCEPTION(
        data::data_loader(train, {.batch_size = 8, .seed = 1, .generator = &shared}), value_error,
        has("not both"));
}

// RandomSampler(generator=g) draws its trailing permutation lazily, when the batches ask for an
// index past the last; PyTorch 1.13's orders and draws when something else draws from g after
// each epoch's first batch (scripts/golden_data.py): 6 samples in batches of 2, 7 with a short
// last batch, and 7 dropping it.
BOOST_AUTO_TEST_CASE(a_shared_generator_sees_the_samplers_draws_when_pytorch_makes_them)
{
    auto check = [](std::size_t n, bool drop_last, const std::int64_t* order, std::size_t size,
                    const float* draws)
    {
        auto ds = numbered(n);
        generator shared(7);
        data::data_loader loader(
            ds, {.batch_size = 2, .shuffle = true, .drop_last = drop_last, .generator = &shared});
        std::vector<std::int64_t> got;
        std::vector<float> drawn;
        for (int epoch = 0; epoch < 2; ++epoch)
        {
            bool first = true;
            for (const auto& [x, y] : loader)
            {
                for (std::size_t i = 0; i < y.shape()[0]; ++i)
                    got.push_back(y(i));
                if (std::exchange(first, false))
                    drawn.push_back(rand<float>({1}, shared)(0));
            }
        }
        drawn.push_back(rand<float>({1}, shared)(0));
        BOOST_TEST(got == std::vector<std::int64_t>(order, order + size),
                   boost::test_tools::per_element());
        BOOST_TEST(drawn == std::vector<float>(draws, draws + 3), boost::test_tools::per_element());
    };
    using namespace golden::data;
    check(6, false, loader_middraw_n6_b2_order, loader_middraw_n6_b2_order_size,
          loader_middraw_n6_b2_draws);
    check(7, false, loader_middraw_n7_b2_order, loader_middraw_n7_b2_order_size,
          loader_middraw_n7_b2_draws);
    check(7, true, loader_middraw_n7_b2_drop_order, loader_middraw_n7_b2_drop_order_size,
          loader_middraw_n7_b2_drop_draws);
}

BOOST_AUTO_TEST_CASE(unseeded_loader_draws_from_the_default_generator_as_pytorch_does)
{
    auto ds = numbered(10);
    manual_seed(1);
    data::data_loader shuffled(ds, {.batch_size = 4, .shuffle = true});
    BOOST_TEST(epoch_ids(shuffled) == GOLDEN(loader_unseeded_shuffle_epoch0));
    BOOST_TEST(epoch_ids(shuffled) == GOLDEN(loader_unseeded_shuffle_epoch1));
    BOOST_TEST(rand<float>({1})(0) == golden::data::loader_unseeded_shuffle_rand_after);

    manual_seed(1);
    data::data_loader ordered(ds, {.batch_size = 4});
    epoch_ids(ordered);
    epoch_ids(ordered);
    BOOST_TEST(rand<float>({1})(0) == golden::data::loader_unseeded_ordered_rand_after);
}

BOOST_AUTO_TEST_CASE(drop_last_drops_the_short_batch)
{
    auto ds = numbered(10);
    data::data_loader loader(ds, {.batch_size = 4, .shuffle = true, .drop_last = true, .seed = 2});
    BOOST_TEST(loader.size() == 2u);
    std::size_t batches = 0;
    std::set<std::int64_t> seen;
    for (const auto& [x, y] : loader)
    {
        BOOST_TEST(x.shape()[0] == 4u);
        BOOST_TEST(y.size() == 4u);
        seen.insert(y.begin(), y.end());
        ++batches;
    }
    BOOST_TEST(batches == 2u);
    BOOST_TEST(seen.size() == 8u);

    data::data_loader exact(ds, {.batch_size = 5, .drop_last = true});
    BOOST_TEST(exact.size() == 2u);
    BOOST_TEST(epoch_ids(exact) == range_ids(0, 10));
}

BOOST_AUTO_TEST_CASE(batches_reuse_their_buffers)
{
    auto ds = numbered(10);
    data::data_loader loader(ds, {.batch_size = 4, .shuffle = true, .seed = 3});
    const float* full_x = nullptr;
    const std::int64_t* full_y = nullptr;
    const float* tail_x = nullptr;
    const void* full_batch = nullptr;
    for (int e = 0; e < 4; ++e)
    {
        for (const auto& batch : loader)
        {
            const auto& [x, y] = batch;
            if (x.shape()[0] == 4)
            {
                if (!full_x)
                {
                    full_x = x.data();
                    full_y = y.data();
                    full_batch = &batch;
                }
                BOOST_TEST(x.data() == full_x);
                BOOST_TEST(y.data() == full_y);
                BOOST_TEST(&batch == full_batch);
            }
            else
            {
                BOOST_TEST(x.shape()[0] == 2u);
                if (!tail_x)
                    tail_x = x.data();
                BOOST_TEST(x.data() == tail_x);
            }
        }
    }
    BOOST_TEST(tail_x != nullptr);
}

BOOST_AUTO_TEST_CASE(epochs_after_the_first_allocate_nothing)
{
    auto ds = numbered(50);
    auto [train, val] = data::split(ds, {0.7, 0.3});
    data::data_loader seeded(ds, {.batch_size = 8, .shuffle = true, .seed = 1});
    data::data_loader unseeded(train, {.batch_size = 8, .shuffle = true});
    data::data_loader dropping(ds, {.batch_size = 8, .drop_last = true});
    auto epochs = [](auto& loader, int count)
    {
        const long before = allocations;
        std::int64_t sum = 0;
        for (int e = 0; e < count; ++e)
            for (const auto& [x, y] : loader)
                sum += y(0);
        BOOST_TEST(sum >= 0);
        return allocations - before;
    };
    BOOST_TEST(epochs(seeded, 1) > 0); // the buffers take their shapes
    BOOST_TEST(epochs(unseeded, 1) > 0);
    BOOST_TEST(epochs(dropping, 1) > 0);
    BOOST_TEST(epochs(seeded, 5) == 0);
    BOOST_TEST(epochs(unseeded, 5) == 0);
    BOOST_TEST(epochs(dropping, 5) == 0);
}

BOOST_AUTO_TEST_CASE(loader_over_a_subset_yields_the_subsets_samples)
{
    auto ds = numbered(20);
    auto [train, val] = data::split(ds, {0.75, 0.25});
    data::data_loader loader(val, {.batch_size = 2, .shuffle = true, .seed = 4});
    auto got = epoch_ids(loader);
    std::sort(got.begin(), got.end());
    BOOST_TEST(got == range_ids(15, 20));
}

BOOST_AUTO_TEST_CASE(state_round_trip_mid_epoch_gives_the_same_remaining_batches)
{
    auto ds = numbered(23);
    const data::data_loader_options options{.batch_size = 4, .shuffle = true, .seed = 11};
    data::data_loader straight(ds, options);
    data::data_loader first(ds, options);
    // One epoch and three batches in, then save.
    epoch_ids(straight);
    epoch_ids(first);
    for (int i = 0; i < 3; ++i)
    {
        straight.next();
        first.next();
    }
    const value saved = first.state();
    BOOST_TEST(first.in_epoch());
    BOOST_TEST(first.position() == 12u);

    data::data_loader resumed(ds, options);
    resumed.load_state(saved);
    BOOST_TEST(resumed.epoch() == 1);
    BOOST_TEST(resumed.position() == 12u);
    BOOST_TEST((resumed.state() == saved));
    // The rest of this epoch, then two more, batch for batch.
    for (int e = 0; e < 3; ++e)
        BOOST_TEST(epoch_ids(resumed) == epoch_ids(straight), "epoch " << e + 1);
    BOOST_TEST((resumed.state() == straight.state()));
}

// Version 1 states (ember before the sampler's trailing permutation was drawn lazily) drew it
// as an epoch began: loaded mid-epoch, none is pending, and the loader does not draw it again.
BOOST_AUTO_TEST_CASE(a_version_1_state_loads_with_no_trailing_permutation_pending)
{
    auto ds = numbered(10);
    const data::data_loader_options options{.batch_size = 4, .shuffle = true, .seed = 11};
    data::data_loader first(ds, options);
    first.next();
    value::dict v1 = first.state().as<value::dict>();
    BOOST_TEST(v1.at("tail_pending").as<bool>());
    value::dict old;
    for (const auto& [key, entry] : v1)
        if (key != "tail_pending")
            old.insert(key, key == "version" ? value(1) : entry);
    data::data_loader resumed(ds, options);
    resumed.load_state(old);
    BOOST_TEST(!resumed.state().as<value::dict>().at("tail_pending").as<bool>());
    const generator_state before = resumed.random_source().state();
    while (resumed.next() != nullptr)
    {
    }
    BOOST_TEST((resumed.random_source().state() == before)); // nothing drawn to the epoch's end
}

BOOST_AUTO_TEST_CASE(state_between_epochs_resumes_with_the_next_epoch)
{
    auto ds = numbered(9);
    const data::data_loader_options options{.batch_size = 2, .shuffle = true, .seed = 6};
    data::data_loader straight(ds, options), first(ds, options);
    epoch_ids(straight);
    epoch_ids(first);
    const value saved = first.state();
    BOOST_TEST(!first.in_epoch());
    BOOST_TEST(saved.as<value::dict>().at("order").is_none());
    data::data_loader resumed(ds, options);
    resumed.load_state(saved);
    BOOST_TEST(epoch_ids(resumed) == epoch_ids(straight));
}

BOOST_AUTO_TEST_CASE(unseeded_state_resumes_with_the_default_generator_restored)
{
    auto ds = numbered(11);
    const data::data_loader_options options{.batch_size = 3, .shuffle = true};
    manual_seed(21);
    data::data_loader straight(ds, options);
    epoch_ids(straight);
    straight.next();
    std::vector<std::vector<std::int64_t>> expected{epoch_ids(straight), epoch_ids(straight)};

    manual_seed(21);
    data::data_loader first(ds, options);
    epoch_ids(first);
    first.next();
    const value saved = first.state();
    BOOST_TEST(saved.as<value::dict>().at("generator").is_none());
    const generator_state default_state = default_generator().state();

    manual_seed(999); // what a new process would have
    data::data_loader resumed(ds, options);
    resumed.load_state(saved);
    default_generator().set_state(default_state);
    BOOST_TEST(epoch_ids(resumed) == expected[0]);
    BOOST_TEST(epoch_ids(resumed) == expected[1]);
}

BOOST_AUTO_TEST_CASE(load_state_rejects_states_that_do_not_fit_and_changes_nothing)
{
    auto ds = numbered(8);
    const data::data_loader_options options{.batch_size = 3, .shuffle = true, .seed = 1};
    data::data_loader loader(ds, options);
    loader.next();
    const value good = loader.state();
    auto with = [&](const char* key, value v)
    {
        value s = good;
        s.as<value::dict>().insert_or_assign(key, std::move(v));
        return s;
    };
    auto rejects = [&](const value& s, const char* needle)
    {
        data::data_loader target(ds, options);
        target.next();
        target.next();
        const value before = target.state();
        try
        {
            target.load_state(s);
            BOOST_ERROR("load_state accepted a state: " << needle);
        }
        catch (const error& e)
        {
            BOOST_TEST(std::string(e.what()).find(needle) != std::string::npos,
                       e.what() << " should say " << needle);
        }
        BOOST_TEST((target.state() == before));
    };
    rejects(value(3), "the state is an int");
    rejects(with("version", 3), "version 3");
    rejects(with("size", 9), "dataset of 9 samples, this loader's has 8");
    rejects(with("position", 9), "position 9");
    host_tensor repeated(dtype::int64, {8}); // all zeros
    rejects(with("order", repeated), "not a permutation");
    rejects(with("order", host_tensor(dtype::int64, {7})), "expected int64 [8]");
    rejects(with("generator", value()), "without its own generator");
    value::dict missing = good.as<value::dict>();
    value::dict trimmed;
    for (const auto& [k, v] : missing)
        if (k != "epoch")
            trimmed.insert(k, v);
    rejects(value(trimmed), "no key 'epoch'");

    data::data_loader unseeded(ds, {.batch_size = 3, .shuffle = true});
    BOOST_CHECK_THROW(unseeded.load_state(good), value_error);
}

BOOST_AUTO_TEST_CASE(batch_size_zero_is_a_value_error)
{
    auto ds = numbered(4);
    BOOST_CHECK_THROW(data::data_loader(ds, {.batch_size = 0}), value_error);
    auto empty = numbered(0);
    BOOST_CHECK_THROW(data::data_loader(empty, {.shuffle = true}), value_error);
    data::data_loader none(empty, {.batch_size = 2});
    BOOST_TEST(none.size() == 0u);
    BOOST_TEST(none.next() == nullptr);
}

BOOST_AUTO_TEST_CASE(a_batch_size_past_the_dataset_is_one_batch_of_it_all)
{
    auto ds = numbered(5);
    for (const std::size_t b : {std::size_t{6}, std::numeric_limits<std::size_t>::max() - 1,
                                std::numeric_limits<std::size_t>::max()})
    {
        data::data_loader loader(ds, {.batch_size = b});
        BOOST_TEST(loader.size() == 1u, "batch_size " << b); // (n + b - 1) / b wrapped to 0
        const auto* batch = loader.next();
        BOOST_REQUIRE(batch != nullptr);
        BOOST_TEST(ids(*batch) == (std::vector<std::int64_t>{0, 1, 2, 3, 4}));
        BOOST_TEST(loader.next() == nullptr);
        data::data_loader dropping(ds, {.batch_size = b, .drop_last = true});
        BOOST_TEST(dropping.size() == 0u);
        BOOST_TEST(dropping.next() == nullptr);
    }
}

BOOST_AUTO_TEST_CASE(float_targets_batch_like_features)
{
    features_t x = features_t::from_shape({5, 3});
    tensor<float, 2> y = tensor<float, 2>::from_shape({5, 1});
    for (std::size_t i = 0; i < 5; ++i)
    {
        for (std::size_t j = 0; j < 3; ++j)
            x(i, j) = static_cast<float>(10 * i + j);
        y(i, 0) = static_cast<float>(i) / 2;
    }
    tensor_dataset ds(x, y);
    data::data_loader loader(ds, {.batch_size = 2, .shuffle = true, .seed = 8});
    std::size_t rows = 0;
    for (const auto& [bx, by] : loader)
    {
        BOOST_TEST((by.shape()[1] == 1 && bx.shape()[1] == 3));
        for (std::size_t k = 0; k < bx.shape()[0]; ++k)
        {
            const auto i = static_cast<std::size_t>(bx(k, 0)) / 10;
            BOOST_TEST(bx(k, 2) == static_cast<float>(10 * i + 2));
            BOOST_TEST(by(k, 0) == static_cast<float>(i) / 2);
            ++rows;
        }
    }
    BOOST_TEST(rows == 5u);
}
