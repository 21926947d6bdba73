// Training parity with PyTorch, direction A (PyTorch -> ember): a Linear-BatchNorm1d-ReLU-
// Dropout-Linear MLP and its optimizer, trained a few steps in PyTorch 1.13 and saved with
// torch.save (tests/data/parity/, by scripts/golden_parity.py), load into the same ember model
// and optimizer; ember continues 50 steps on the same batches with the same dropout masks (its
// generator is PyTorch's) and must land where PyTorch landed (tests/golden/parity.hpp):
// parameters and buffers to 1e-5 relative, eval-mode outputs to 1e-6.
// Direction B (ember -> PyTorch) runs live in the 'pytorch_parity_live' test.
#include <ember/serialize/pytorch.hpp>

#include "pytorch_parity.hpp"

#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <filesystem>
#include <span>
#include <string>

namespace fs = std::filesystem;
namespace pt = ember::pytorch;
namespace g = golden::parity;

namespace
{

// Relative to each tensor's scale (parity::scaled_difference).
constexpr double parameter_tolerance = 1e-5; // float32 parameters, buffers and losses
constexpr double output_tolerance = 1e-6;    // eval-mode outputs

fs::path parity_folder()
{
    if (const char* env = std::getenv("EMBER_TEST_DATA"))
        return fs::path(env) / "parity";
    // __FILE__ is relative to the build root, the parent of this executable's folder.
    fs::path source = __FILE__;
    if (source.is_relative())
        source = fs::read_symlink("/proc/self/exe").parent_path().parent_path() / source;
    return source.parent_path() / "data" / "parity";
}

/// One optimizer's golden numbers (a namespace of golden/parity.hpp).
struct expected
{
    const char* name;
    const char* model_file;
    const char* optimizer_file;
    std::span<const float> eval_before;
    std::span<const float> eval_after;
    std::span<const float> losses;
    std::span<const g::entry> final_state;
    const char* num_batches_tracked_key;
    std::int64_t num_batches_tracked;
};

#define EMBER_PARITY_EXPECTED(ns)                                                                  \
    expected                                                                                       \
    {                                                                                              \
#ns, g::ns::model_file, g::ns::optimizer_file, g::ns::eval_before, g::ns::eval_after,      \
            g::ns::losses, g::ns::final_state, g::ns::num_batches_tracked_key,                     \
            g::ns::num_batches_tracked                                                             \
    }

/// A fresh model and optimizer (of the golden options) loaded from PyTorch's files.
template <class Optimizer, class Options>
struct resumed
{
    parity::model_type model = parity::mlp();
    Optimizer optimizer;

    resumed(const expected& e, const Options& options) : optimizer(model.parameters(), options)
    {
        model.load_state_dict(pt::load<ember::state_dict>(parity_folder() / e.model_file));
        optimizer.load_state_dict(
            pt::load<ember::optim::optimizer_state>(parity_folder() / e.optimizer_file));
    }
};

/// Checks that `actual` agrees with the golden `want` to `tolerance` relative to the tensor's
/// scale (max |a - b| / max |b|), and reports that and the largest element-wise relative
/// difference. Element-wise relative differences are no measure for a whole tensor: an output
/// or weight that happens to lie near zero turns a 1e-9 rounding difference into a large one.
template <class A>
void check_close(const A& actual, std::span<const float> want, double tolerance,
                 const std::string& what)
{
    BOOST_TEST_REQUIRE(std::size(actual) == want.size(), what << ": size");
    const double scaled = parity::scaled_difference(actual, want);
    BOOST_TEST_MESSAGE(what << ": " << scaled << " relative to its scale (element-wise at most "
                            << parity::max_relative_difference(actual, want) << ")");
    BOOST_TEST(scaled <= tolerance,
               what << ": differs by " << scaled << " of its scale, more than " << tolerance);
}

template <class Optimizer, class Options>
void check_continues_like_pytorch(const expected& e, const Options& options)
{
    resumed<Optimizer, Options> r(e, options);
    // Loading is exact: the eval output before training is PyTorch's.
    check_close(parity::eval_output(r.model), e.eval_before, output_tolerance,
                std::string(e.name) + " eval output as loaded");

    ember::manual_seed(g::dropout_seed);
    ember::generator data(g::data_seed);
    const auto losses = parity::train(r.model, r.optimizer, g::steps, data);

    check_close(losses, e.losses, parameter_tolerance, std::string(e.name) + " losses");
    const auto state = r.model.state_dict();
    BOOST_TEST(state.size() == e.final_state.size() + 1); // + num_batches_tracked
    for (const auto& entry : e.final_state)
        check_close(state.at(entry.key).template data<float>(), entry.values, parameter_tolerance,
                    std::string(e.name) + " " + entry.key);
    BOOST_TEST(state.at(e.num_batches_tracked_key).template data<std::int64_t>()[0] ==
               e.num_batches_tracked);
    check_close(parity::eval_output(r.model), e.eval_after, output_tolerance,
                std::string(e.name) + " eval output after " + std::to_string(g::steps) + " steps");
}

} // namespace

BOOST_AUTO_TEST_CASE(sgd_with_nesterov_and_weight_decay_continues_as_pytorch_does)
{
    check_continues_like_pytorch<ember::optim::sgd<float>>(EMBER_PARITY_EXPECTED(sgd),
                                                           g::sgd::options);
}

BOOST_AUTO_TEST_CASE(adam_continues_as_pytorch_does)
{
    check_continues_like_pytorch<ember::optim::adam<float>>(EMBER_PARITY_EXPECTED(adam),
                                                            g::adam::options);
}

BOOST_AUTO_TEST_CASE(adamw_continues_as_pytorch_does)
{
    check_continues_like_pytorch<ember::optim::adamw<float>>(EMBER_PARITY_EXPECTED(adamw),
                                                             g::adamw::options);
}

BOOST_AUTO_TEST_CASE(pytorchs_optimizer_file_brings_its_options_and_state)
{
    // Built with other options: load_state_dict takes PyTorch's, as torch.optim does.
    parity::model_type model = parity::mlp();
    ember::optim::adamw<float> adamw(model.parameters(), {.lr = 1, .weight_decay = 0});
    adamw.load_state_dict(
        pt::load<ember::optim::optimizer_state>(parity_folder() / g::adamw::optimizer_file));
    const auto& o = adamw.param_groups()[0].options;
    BOOST_TEST(o.lr == g::adamw::options.lr);
    BOOST_TEST(o.weight_decay == g::adamw::options.weight_decay);
    const auto sd = adamw.state_dict();
    BOOST_TEST(sd.state.size() == model.parameters().size());
    const auto& step = std::get<ember::host_tensor>(sd.state.at(0).at("step"));
    BOOST_TEST(step.data<float>()[0] == float(g::warm_steps));
}

BOOST_AUTO_TEST_CASE(pytorch_files_refuse_the_wrong_model_or_optimizer)
{
    // A model of another width: the error names the key and both shapes.
    namespace nn = ember::nn;
    nn::sequential narrow{nn::linear(g::in_features, 4), nn::relu(), nn::batch_norm1d(4),
                          nn::dropout(g::dropout), nn::linear(4, g::out_features)};
    const auto sd = pt::load<ember::state_dict>(parity_folder() / g::sgd::model_file);
    try
    {
        narrow.load_state_dict(sd);
        BOOST_ERROR("a state_dict of hidden width 16 loaded into a model of width 4");
    }
    catch (const ember::shape_error& e)
    {
        BOOST_TEST(std::string(e.what()).find("0.weight") != std::string::npos, e.what());
    }
    // SGD's state (momentum_buffer) in Adam: refused, naming what is missing.
    parity::model_type model = parity::mlp();
    ember::optim::adam<float> adam(model.parameters());
    const auto sgd_state =
        pt::load<ember::optim::optimizer_state>(parity_folder() / g::sgd::optimizer_file);
    BOOST_CHECK_THROW(adam.load_state_dict(sgd_state), ember::error);
}
