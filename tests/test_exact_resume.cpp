// Exact resume: training 2N steps straight equals training N steps, saving a checkpoint, loading
// it in a new process and training N more — bit for bit: parameters, optimizer state, generator
// states, loader state and every step's loss. With shuffled mini-batches, dropout and Adam, at an
// epoch boundary and in the middle of an epoch.
//
// The new process is this test executable again, started as `test_exact_resume --resume-child
// ARGS...`: its own main() sends that to resume_child() instead of the test runner.
#include <ember/data/data.hpp>
#include <ember/loss/mse.hpp>
#include <ember/nn/layers.hpp>
#include <ember/optim/adam.hpp>
#include <ember/serialize/cereal.hpp>
#include <ember/serialize/checkpoint.hpp>
#include <ember/serialize/file.hpp>

#define BOOST_TEST_NO_MAIN // main() below also runs the child half of a resume
#include <boost/test/unit_test.hpp>

#include "test_files.hpp"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

using namespace ember;
namespace fs = std::filesystem;

namespace
{

constexpr std::size_t samples = 60, features = 4, batch_size = 8;
constexpr std::int64_t batches_per_epoch = (samples + batch_size - 1) / batch_size; // 8, last has 4

using dataset_t = data::tensor_dataset<tensor<float, 2>, tensor<float, 2>>;

// y = sum of sin(x_j) + noise, from a generator of its own: the same in every process.
const dataset_t& training_data()
{
    static const dataset_t ds = []
    {
        generator g(3);
        auto x = randn<float>({samples, features}, g);
        auto noise = randn<float>({samples, 1}, g);
        tensor<float, 2> y = tensor<float, 2>::from_shape({samples, 1});
        for (std::size_t i = 0; i < samples; ++i)
        {
            float s = 0.1f * noise(i, 0);
            for (std::size_t j = 0; j < features; ++j)
                s += std::sin(x(i, j));
            y(i, 0) = s;
        }
        return dataset_t(std::move(x), std::move(y));
    }();
    return ds;
}

// One training run: model, optimizer, loader and what it has done so far.
struct run
{
    explicit run(bool seeded_loader)
        : model(nn::linear(features, 16), nn::relu(), nn::dropout(0.3), nn::linear(16, 1)),
          optimizer(model.parameters(), {.lr = 1e-2}),
          loader(training_data(),
                 {.batch_size = batch_size,
                  .shuffle = true,
                  .seed = seeded_loader ? std::optional<std::uint64_t>(17) : std::nullopt})
    {
    }

    void step(const tensor<float, 2>& x, const tensor<float, 2>& y)
    {
        model.train();
        const float loss = criterion(model(x), y);
        optimizer.zero_grad();
        model.backward(criterion.backward());
        optimizer.step();
        losses.push_back(loss);
    }

    // Trains until `stop` steps in all, leaving the loader in the middle of an epoch when the
    // stop falls there, and between epochs when it falls on an epoch's last batch.
    void train_until(std::int64_t stop)
    {
        while (global_step < stop)
        {
            for (const auto& [x, y] : loader)
            {
                step(x, y);
                if (++global_step == stop && global_step % batches_per_epoch != 0)
                    return;
            }
            ++epoch;
        }
    }

    checkpoint save_state() const
    {
        checkpoint c;
        c.epoch = epoch;
        c.global_step = global_step;
        c.model_state_dict = model.state_dict();
        c.optimizer_state_dict = optimizer.state_dict();
        c.train_loss = losses.empty() ? 0.0 : losses.back();
        c.generators.insert("default", default_generator().state());
        c.data_state = loader.state();
        host_tensor l(dtype::float32, {static_cast<std::int64_t>(losses.size())});
        std::memcpy(l.bytes().data(), losses.data(), l.nbytes());
        c.extras.insert("losses", std::move(l));
        return c;
    }

    void load_state(const checkpoint& c)
    {
        epoch = c.epoch;
        global_step = c.global_step;
        model.load_state_dict(c.model_state_dict);
        optimizer.load_state_dict(c.optimizer_state_dict);
        default_generator().set_state(c.generators.at("default"));
        loader.load_state(c.data_state);
    }

    nn::sequential<nn::linear<float>, nn::relu<float>, nn::dropout<float>, nn::linear<float>> model;
    optim::adam<float> optimizer;
    nn::mse_loss<float> criterion;
    data::data_loader<dataset_t> loader;
    std::int64_t global_step = 0, epoch = 0;
    std::vector<float> losses;
};

fs::path self_executable()
{
    return fs::read_symlink("/proc/self/exe");
}

// Runs this executable's `resume_in_child` in a new process; returns its exit status.
int run_child(const std::vector<std::string>& args)
{
    const std::string exe = self_executable().string();
    std::vector<std::string> all{exe, "--resume-child"};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : all)
        argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid;
    if (::posix_spawn(&pid, exe.c_str(), nullptr, nullptr, argv.data(), environ) != 0)
        return -1;
    int status = 0;
    if (::waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b)
{
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::vector<float> losses_of(const checkpoint& c)
{
    auto d = c.extras.at("losses").as<host_tensor>().data<float>();
    return std::vector<float>(d.begin(), d.end());
}

// A fresh folder for one test's files, removed at the end.

void check_resume(std::int64_t n, bool seeded_loader, const std::string& name)
{
    test::temp_dir dir("ember_exact_resume_" + name);

    // Straight: 2N steps.
    manual_seed(0);
    run straight(seeded_loader);
    straight.train_until(2 * n);
    const checkpoint expected = straight.save_state();

    // N steps, then a checkpoint on disk.
    manual_seed(0);
    run first(seeded_loader);
    first.train_until(n);
    BOOST_TEST(first.loader.in_epoch() == (n % batches_per_epoch != 0));
    const fs::path saved = dir.path / "checkpoint.ember";
    save(first.save_state(), saved);

    // N more in a new process, which writes what it ended with.
    const fs::path result = dir.path / "result.ember";
    const int status = run_child({seeded_loader ? "seeded" : "unseeded", std::to_string(2 * n),
                                  saved.string(), result.string()});
    BOOST_TEST_REQUIRE(status == 0, "the resumed process failed with status " << status);
    const auto resumed = load<checkpoint>(result);

    BOOST_TEST(resumed.global_step == 2 * n);
    BOOST_TEST(resumed.epoch == expected.epoch);
    BOOST_TEST((resumed.model_state_dict == expected.model_state_dict),
               "parameters differ from the straight run's");
    BOOST_TEST((resumed.optimizer_state_dict == expected.optimizer_state_dict),
               "optimizer state differs from the straight run's");
    BOOST_TEST((resumed.generators == expected.generators),
               "the default generator is elsewhere than the straight run's");
    BOOST_TEST((resumed.data_state == expected.data_state),
               "the loader is elsewhere than the straight run's");
    std::vector<float> joined = first.losses;
    const auto second = losses_of(resumed);
    joined.insert(joined.end(), second.begin(), second.end());
    BOOST_TEST(joined.size() == static_cast<std::size_t>(2 * n));
    BOOST_TEST(same_bits(joined, straight.losses), "per-step losses differ");
    // Not a run that learns nothing: dropout and shuffling make every loss differ.
    BOOST_TEST(straight.losses.front() != straight.losses.back());
}

} // namespace

BOOST_AUTO_TEST_CASE(resume_at_an_epoch_boundary_equals_the_straight_run)
{
    check_resume(2 * batches_per_epoch, true, "boundary");
}

BOOST_AUTO_TEST_CASE(resume_in_the_middle_of_an_epoch_equals_the_straight_run)
{
    check_resume(2 * batches_per_epoch + 5, true, "middle");
}

BOOST_AUTO_TEST_CASE(resume_with_a_loader_drawing_from_the_default_generator)
{
    check_resume(batches_per_epoch + 3, false, "unseeded");
}

BOOST_AUTO_TEST_CASE(a_resume_without_the_generator_state_differs)
{
    // The control: restoring everything but the default generator changes the dropout masks,
    // so the comparisons above can tell a wrong resume from a right one.
    const std::int64_t n = batches_per_epoch + 3;
    manual_seed(0);
    run straight(true);
    straight.train_until(2 * n);

    manual_seed(0);
    run first(true);
    first.train_until(n);
    checkpoint c = first.save_state();
    c.generators.at("default") = generator(12345).state();
    run second(true);
    second.load_state(c);
    second.train_until(2 * n);
    std::vector<float> joined = first.losses;
    joined.insert(joined.end(), second.losses.begin(), second.losses.end());
    BOOST_TEST(!same_bits(joined, straight.losses));
    BOOST_TEST((second.model.state_dict() != straight.model.state_dict()));
}

// The second half of a resume, in its own process: `--resume-child seeded|unseeded STOP IN OUT`.
// Returns 0 after saving the resumed run's state to OUT.
static int resume_child(int argc, char** argv)
{
    if (argc != 6)
    {
        std::fprintf(stderr, "usage: %s --resume-child seeded|unseeded STOP IN OUT\n", argv[0]);
        return 2;
    }
    try
    {
        const bool seeded = std::string(argv[2]) == "seeded";
        const std::int64_t stop = std::stoll(argv[3]);
        const auto c = load<checkpoint>(argv[4]);
        manual_seed(987); // a fresh process's generator is anywhere; the checkpoint must restore it
        run resumed(seeded);
        resumed.load_state(c);
        resumed.train_until(stop);
        save(resumed.save_state(), argv[5]);
        return 0;
    }
    catch (const std::exception& e)
    {
        std::fprintf(stderr, "resume child: %s\n", e.what());
        return 1;
    }
}

int main(int argc, char** argv)
{
    if (argc > 1 && std::string(argv[1]) == "--resume-child")
        return resume_child(argc, argv);
    return boost::unit_test::unit_test_main(&init_unit_test, argc, argv);
}
