// LR schedulers against PyTorch 1.13 (tests/golden/schedulers.hpp, from
// scripts/golden_schedulers.py): the lr sequences of the chainable and closed forms, resumes,
// lrs changed from outside, ReduceLROnPlateau on a fixed metric sequence, state_dict keys and
// values as PyTorch writes them; state that survives a checkpoint in every file format and a
// resume in the middle of a run; a checkpoint torch.save wrote, resumed in ember; and the ways
// a user gets it wrong.
#include "golden/schedulers.hpp"
#include "test_files.hpp"

#include <ember/nn/parameter.hpp>
#include <ember/optim/adam.hpp>
#include <ember/optim/lr_scheduler.hpp>
#include <ember/optim/sgd.hpp>
#include <ember/serialize/checkpoint.hpp>
#include <ember/serialize/file.hpp>
#include <ember/serialize/pytorch.hpp>

#include <boost/test/unit_test.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>
#include <string>

#include <unistd.h>

using namespace ember;
namespace gold = golden::schedulers;
namespace fs = std::filesystem;
using optim::sgd;

namespace
{

// Two SGD param groups with PyTorch's lrs 0.1 and 0.03, like the golden script's.
struct setup
{
    nn::parameter<double, 1> p0{tensor<double, 1>::from_shape({2})};
    nn::parameter<double, 1> p1{tensor<double, 1>::from_shape({3})};
    sgd<double> opt = make();

    sgd<double> make()
    {
        std::vector<optim::param_group<double, optim::sgd_options>> groups;
        groups.emplace_back(std::vector{nn::param_ref<double>(p0)},
                            optim::sgd_options{.lr = gold::lrs[0]});
        groups.emplace_back(std::vector{nn::param_ref<double>(p1)},
                            optim::sgd_options{.lr = gold::lrs[1]});
        return sgd<double>(std::move(groups));
    }

    std::array<double, 2> lrs() const
    {
        return {opt.param_groups()[0].options.lr, opt.param_groups()[1].options.lr};
    }
    void set_initial_lrs()
    {
        for (std::size_t g = 0; g < 2; ++g)
            opt.param_groups()[g].initial_lr = gold::lrs[g];
    }
};

bool close_to(double a, double b)
{
    if (a == b)
        return true;
    return std::fabs(a - b) <= 1e-15 * std::max(std::fabs(a), std::fabs(b));
}

std::string str(const std::array<double, 2>& a)
{
    return "[" + optim::detail::py_float(a[0]) + ", " + optim::detail::py_float(a[1]) + "]";
}

// Python's repr of a state_dict value, as the golden script writes it.
std::string py_repr(const value& v)
{
    if (v.is_none())
        return "None";
    if (v.is_bool())
        return v.as<bool>() ? "True" : "False";
    if (v.is_int())
        return std::to_string(v.as<std::int64_t>());
    if (v.is_double())
        return optim::detail::py_float(v.as<double>());
    if (v.is_string())
        return "'" + v.as<std::string>() + "'";
    if (v.is_list())
    {
        std::string out = "[";
        for (const auto& e : v.as<value::list>())
            out += (out.size() > 1 ? ", " : "") + py_repr(e);
        return out + "]";
    }
    if (v.is_dict())
    {
        std::string out = "{";
        for (const auto& [k, e] : v.as<value::dict>())
            out += (out.size() > 1 ? ", '" : "'") + k + "': " + py_repr(e);
        return out + "}";
    }
    return "<tensor>";
}

void check_sequence(const std::vector<std::array<double, 2>>& got,
                    const std::vector<std::array<double, 2>>& expected, const std::string& what)
{
    BOOST_REQUIRE_MESSAGE(got.size() == expected.size(), what << ": " << got.size()
                                                              << " entries, PyTorch has "
                                                              << expected.size());
    for (std::size_t i = 0; i < got.size(); ++i)
        BOOST_CHECK_MESSAGE(
            close_to(got[i][0], expected[i][0]) && close_to(got[i][1], expected[i][1]),
            what << "[" << i << "]: " << str(got[i]) << ", PyTorch " << str(expected[i]));
}

void check_state(const value::dict& sd, const gold::run& expected, const std::string& what)
{
    std::vector<std::string> keys = sd.keys();
    BOOST_REQUIRE_MESSAGE(keys.size() == expected.state.size(),
                          what << ": state_dict has " << keys.size() << " keys, PyTorch's "
                               << expected.state.size());
    for (std::size_t i = 0; i < keys.size(); ++i)
    {
        BOOST_CHECK_MESSAGE(keys[i] == expected.state[i].first,
                            what << ": key " << i << " is '" << keys[i] << "', PyTorch's '"
                                 << expected.state[i].first << "'");
        const std::string repr = py_repr(sd.at(keys[i]));
        BOOST_CHECK_MESSAGE(repr == expected.state[i].second,
                            what << "['" << keys[i] << "'] = " << repr << ", PyTorch "
                                 << expected.state[i].second);
    }
}

// Records lr and get_last_lr() after construction and after every step of `advance(i)`.
template <class Sched>
struct recorder
{
    std::vector<std::array<double, 2>> lr, last_lr;
    void record(const setup& s, const Sched& sched)
    {
        lr.push_back(s.lrs());
        const auto& last = sched.get_last_lr();
        if (!last.empty())
            last_lr.push_back({last[0], last[1]});
    }
};

template <template <class> class Sched, class Options = typename Sched<sgd<double>>::options_type>
void check_chain(const std::type_identity_t<Options>& options, const gold::run& expected,
                 const std::string& what, std::size_t halve_after = 0)
{
    setup s;
    Sched<sgd<double>> sched(s.opt, options);
    recorder<Sched<sgd<double>>> r;
    r.record(s, sched);
    for (std::size_t i = 0; i < gold::steps; ++i)
    {
        s.opt.step();
        sched.step();
        r.record(s, sched);
        if (halve_after != 0 && i + 1 == halve_after)
        {
            for (auto& g : s.opt.param_groups())
                g.options.lr *= 0.5;
            r.record(s, sched);
        }
    }
    check_sequence(r.lr, expected.lr, what + " lr");
    check_sequence(r.last_lr, expected.last_lr, what + " get_last_lr()");
    check_state(sched.state_dict(), expected, what);
}

template <template <class> class Sched, class Options = typename Sched<sgd<double>>::options_type>
void check_closed(const std::type_identity_t<Options>& options, const std::vector<long>& epochs,
                  const gold::run& expected, const std::string& what)
{
    setup s;
    Sched<sgd<double>> sched(s.opt, options);
    recorder<Sched<sgd<double>>> r;
    r.record(s, sched);
    for (long e : epochs)
    {
        sched.step(static_cast<std::int64_t>(e));
        r.record(s, sched);
    }
    check_sequence(r.lr, expected.lr, what + " lr");
    check_sequence(r.last_lr, expected.last_lr, what + " get_last_lr()");
    check_state(sched.state_dict(), expected, what);
}

template <template <class> class Sched, class Options = typename Sched<sgd<double>>::options_type>
void check_resume(const std::type_identity_t<Options>& options, const gold::run& expected,
                  const std::string& what)
{
    setup s;
    s.set_initial_lrs();
    Sched<sgd<double>> sched(s.opt, options);
    recorder<Sched<sgd<double>>> r;
    r.record(s, sched);
    for (std::size_t i = 0; i < gold::steps; ++i)
    {
        sched.step();
        r.record(s, sched);
    }
    check_sequence(r.lr, expected.lr, what + " lr");
    check_state(sched.state_dict(), expected, what);
}

void check_plateau(const optim::reduce_lr_on_plateau_options& options, const gold::run& expected,
                   const std::string& what)
{
    setup s;
    optim::reduce_lr_on_plateau sched(s.opt, options);
    recorder<optim::reduce_lr_on_plateau<sgd<double>>> r;
    r.record(s, sched);
    for (std::size_t i = 0; i < gold::steps; ++i)
    {
        sched.step(gold::metrics[i]);
        r.record(s, sched);
    }
    check_sequence(r.lr, expected.lr, what + " lr");
    check_sequence(r.last_lr, expected.last_lr, what + " get_last_lr()");
    check_state(sched.state_dict(), expected, what);
}

using test::temp_dir;

} // namespace

using optim::cosine_annealing_lr;
using optim::exponential_lr;
using optim::linear_lr;
using optim::multi_step_lr;
using optim::plateau_mode;
using optim::plateau_threshold;
using optim::step_lr;

BOOST_AUTO_TEST_CASE(step_lr_matches_pytorch)
{
    check_chain<step_lr>({.step_size = 3, .gamma = 0.5}, gold::step_lr, "step_lr");
    check_chain<step_lr>({.step_size = 7}, gold::step_lr_default_gamma, "step_lr default gamma");
}

BOOST_AUTO_TEST_CASE(multi_step_lr_matches_pytorch_with_a_repeated_milestone)
{
    check_chain<multi_step_lr>({.milestones = {4, 9, 9, 15}, .gamma = 0.3}, gold::multi_step_lr,
                               "multi_step_lr");
}

BOOST_AUTO_TEST_CASE(exponential_lr_matches_pytorch)
{
    check_chain<exponential_lr>({.gamma = 0.9}, gold::exponential_lr, "exponential_lr");
}

BOOST_AUTO_TEST_CASE(cosine_annealing_lr_matches_pytorch_past_t_max)
{
    check_chain<cosine_annealing_lr>({.T_max = 10, .eta_min = 0.001}, gold::cosine_annealing_lr,
                                     "cosine_annealing_lr");
    check_chain<cosine_annealing_lr>({.T_max = 7}, gold::cosine_annealing_lr_default_eta_min,
                                     "cosine_annealing_lr eta_min 0");
}

BOOST_AUTO_TEST_CASE(linear_lr_matches_pytorch_for_warm_up_and_decay)
{
    check_chain<linear_lr>({.start_factor = 0.25, .total_iters = 8}, gold::linear_lr_warmup,
                           "linear_lr warm-up");
    check_chain<linear_lr>({}, gold::linear_lr_defaults, "linear_lr defaults");
    check_chain<linear_lr>({.start_factor = 1.0, .end_factor = 0.1, .total_iters = 10},
                           gold::linear_lr_decay, "linear_lr decay");
}

BOOST_AUTO_TEST_CASE(step_with_an_epoch_uses_pytorchs_closed_form)
{
    check_closed<step_lr>({.step_size = 3, .gamma = 0.5}, gold::step_lr_closed_epochs,
                          gold::step_lr_closed, "step_lr closed");
    check_closed<multi_step_lr>({.milestones = {4, 9, 9, 15}, .gamma = 0.3},
                                gold::multi_step_lr_closed_epochs, gold::multi_step_lr_closed,
                                "multi_step_lr closed");
    check_closed<exponential_lr>({.gamma = 0.9}, gold::exponential_lr_closed_epochs,
                                 gold::exponential_lr_closed, "exponential_lr closed");
    check_closed<cosine_annealing_lr>({.T_max = 10, .eta_min = 0.001},
                                      gold::cosine_annealing_lr_closed_epochs,
                                      gold::cosine_annealing_lr_closed, "cosine closed");
    check_closed<linear_lr>({.start_factor = 0.25, .total_iters = 8}, gold::linear_lr_closed_epochs,
                            gold::linear_lr_closed, "linear_lr closed");
}

BOOST_AUTO_TEST_CASE(a_scheduler_made_with_last_epoch_resumes_like_pytorchs)
{
    check_resume<step_lr>({.step_size = 3, .gamma = 0.5, .last_epoch = 4}, gold::step_lr_resume,
                          "step_lr resume");
    check_resume<cosine_annealing_lr>({.T_max = 10, .eta_min = 0.001, .last_epoch = 4},
                                      gold::cosine_annealing_lr_resume, "cosine resume");
}

BOOST_AUTO_TEST_CASE(the_chainable_form_follows_an_lr_changed_from_outside)
{
    check_chain<step_lr>({.step_size = 3, .gamma = 0.5}, gold::step_lr_outside, "step_lr outside",
                         4);
    check_chain<cosine_annealing_lr>({.T_max = 10, .eta_min = 0.001},
                                     gold::cosine_annealing_lr_outside, "cosine outside", 4);
    check_chain<linear_lr>({.start_factor = 0.25, .total_iters = 8}, gold::linear_lr_outside,
                           "linear_lr outside", 3);
}

BOOST_AUTO_TEST_CASE(reduce_lr_on_plateau_matches_pytorch_in_every_mode)
{
    check_plateau({.factor = 0.5, .patience = 2, .cooldown = 1, .min_lr = 0.002},
                  gold::plateau_min_rel, "plateau min rel");
    check_plateau(
        {.factor = 0.5, .patience = 1, .threshold = 0.01, .threshold_mode = plateau_threshold::abs},
        gold::plateau_min_abs, "plateau min abs");
    check_plateau({.mode = plateau_mode::max,
                   .factor = 0.2,
                   .patience = 0,
                   .cooldown = 2,
                   .min_lrs = {0.001, 0.0001}},
                  gold::plateau_max_rel, "plateau max rel");
    check_plateau({.mode = plateau_mode::max,
                   .patience = 3,
                   .threshold = 0.02,
                   .threshold_mode = plateau_threshold::abs},
                  gold::plateau_max_abs, "plateau max abs");
    check_plateau({.factor = 0.5, .patience = 1, .eps = 0.01}, gold::plateau_eps, "plateau eps");
}

BOOST_AUTO_TEST_CASE(the_scheduler_sets_initial_lr_which_the_optimizer_saves)
{
    setup s;
    linear_lr sched(s.opt, {.start_factor = 0.25, .total_iters = 8});
    BOOST_TEST(s.opt.param_groups()[0].initial_lr.value() == gold::lrs[0]);
    BOOST_TEST(s.opt.param_groups()[0].options.lr == gold::lrs[0] * 0.25);
    const auto sd = s.opt.state_dict();
    BOOST_TEST(std::get<double>(sd.param_groups[1].options.at("initial_lr")) == gold::lrs[1]);
    // PyTorch's setdefault: a second scheduler keeps the first one's initial_lr.
    s.opt.param_groups()[0].options.lr = 0.5;
    step_lr other(s.opt, {.step_size = 3});
    BOOST_TEST(other.base_lrs()[0] == gold::lrs[0]);
}

namespace
{

// Runs `split` steps, saves the state through `transfer` (into a new optimizer and scheduler,
// as a resumed process would), then finishes the run; the lrs must be the uninterrupted run's.
template <template <class> class Sched, class Options = typename Sched<sgd<double>>::options_type>
void check_resume_through(const std::type_identity_t<Options>& options, const gold::run& expected,
                          const std::function<value(const value&)>& transfer,
                          const std::string& what, std::size_t split = 12)
{
    std::vector<std::array<double, 2>> lrs;
    value sched_state;
    optim::optimizer_state opt_state;
    {
        setup s;
        Sched<sgd<double>> sched(s.opt, options);
        lrs.push_back(s.lrs());
        for (std::size_t i = 0; i < split; ++i)
        {
            s.opt.step();
            sched.step();
            lrs.push_back(s.lrs());
        }
        sched_state = transfer(sched.state_dict());
        opt_state = s.opt.state_dict();
    }
    // PyTorch's order: make everything as for a new run, then load the optimizer's state (lr,
    // initial_lr) and the scheduler's.
    setup s;
    Sched<sgd<double>> sched(s.opt, options);
    s.opt.load_state_dict(opt_state);
    sched.load_state_dict(sched_state);
    for (std::size_t i = split; i < gold::steps; ++i)
    {
        s.opt.step();
        sched.step();
        lrs.push_back(s.lrs());
    }
    check_sequence(lrs, expected.lr, what);
    check_state(sched.state_dict(), expected, what);
}

void check_plateau_resume_through(const optim::reduce_lr_on_plateau_options& options,
                                  const gold::run& expected,
                                  const std::function<value(const value&)>& transfer,
                                  const std::string& what, std::size_t split = 12)
{
    std::vector<std::array<double, 2>> lrs;
    value sched_state;
    optim::optimizer_state opt_state;
    {
        setup s;
        optim::reduce_lr_on_plateau sched(s.opt, options);
        lrs.push_back(s.lrs());
        for (std::size_t i = 0; i < split; ++i)
        {
            sched.step(gold::metrics[i]);
            lrs.push_back(s.lrs());
        }
        sched_state = transfer(sched.state_dict());
        opt_state = s.opt.state_dict();
    }
    setup s;
    s.opt.load_state_dict(opt_state);
    optim::reduce_lr_on_plateau sched(s.opt);
    sched.load_state_dict(sched_state);
    for (std::size_t i = split; i < gold::steps; ++i)
    {
        sched.step(gold::metrics[i]);
        lrs.push_back(s.lrs());
    }
    check_sequence(lrs, expected.lr, what);
    check_state(sched.state_dict(), expected, what);
}

value same(const value& v)
{
    return v;
}

} // namespace

BOOST_AUTO_TEST_CASE(a_run_resumed_from_state_dict_continues_exactly)
{
    check_resume_through<step_lr>({.step_size = 3, .gamma = 0.5}, gold::step_lr, same, "step_lr");
    check_resume_through<multi_step_lr>({.milestones = {4, 9, 9, 15}, .gamma = 0.3},
                                        gold::multi_step_lr, same, "multi_step_lr");
    check_resume_through<exponential_lr>({.gamma = 0.9}, gold::exponential_lr, same,
                                         "exponential_lr");
    check_resume_through<cosine_annealing_lr>({.T_max = 10, .eta_min = 0.001},
                                              gold::cosine_annealing_lr, same, "cosine");
    check_resume_through<linear_lr>({.start_factor = 0.25, .total_iters = 8},
                                    gold::linear_lr_warmup, same, "linear_lr", 3);
    check_plateau_resume_through({.factor = 0.5, .patience = 2, .cooldown = 1, .min_lr = 0.002},
                                 gold::plateau_min_rel, same, "plateau", 13);
}

BOOST_AUTO_TEST_CASE(reduce_lr_on_plateau_takes_a_negative_patience_and_cooldown_as_pytorch_does)
{
    // A reduction at every step (0 bad epochs > -1), and no cooldown; the state, with its
    // negative cooldown_counter, resumes.
    const optim::reduce_lr_on_plateau_options options{
        .factor = 0.5, .patience = -1, .cooldown = -2, .min_lr = 0.002};
    check_plateau(options, gold::plateau_negative, "plateau negative");
    check_plateau_resume_through(options, gold::plateau_negative, same, "plateau negative", 3);
}

BOOST_AUTO_TEST_CASE(scheduler_state_survives_a_checkpoint_in_every_file_format)
{
    temp_dir dir;
    for (const char* ext : {".ember", ".tar", ".json", ".xml", ".bin"})
    {
        int n = 0;
        auto through_file = [&](const value& state)
        {
            checkpoint ck;
            ck.scheduler_state = state;
            const fs::path path = dir.path / ("ck" + std::to_string(n++) + ext);
            save(ck, path);
            checkpoint loaded = load<checkpoint>(path);
            BOOST_CHECK_MESSAGE(loaded.scheduler_state == state,
                                ext << ": the scheduler state changed through the file");
            return loaded.scheduler_state;
        };
        const std::string what = std::string("through ") + ext;
        check_resume_through<step_lr>({.step_size = 3, .gamma = 0.5}, gold::step_lr, through_file,
                                      "step_lr " + what);
        check_resume_through<multi_step_lr>({.milestones = {4, 9, 9, 15}, .gamma = 0.3},
                                            gold::multi_step_lr, through_file,
                                            "multi_step_lr " + what);
        check_resume_through<cosine_annealing_lr>({.T_max = 10, .eta_min = 0.001},
                                                  gold::cosine_annealing_lr, through_file,
                                                  "cosine " + what);
        check_resume_through<linear_lr>({}, gold::linear_lr_defaults, through_file,
                                        "linear_lr " + what, 2);
        // Before the first step: best is inf and there is no _last_lr yet.
        check_plateau_resume_through({.mode = plateau_mode::max,
                                      .factor = 0.2,
                                      .patience = 0,
                                      .cooldown = 2,
                                      .min_lrs = {0.001, 0.0001}},
                                     gold::plateau_max_rel, through_file, "plateau (fresh) " + what,
                                     0);
        check_plateau_resume_through({.factor = 0.5, .patience = 1, .eps = 0.01}, gold::plateau_eps,
                                     through_file, "plateau " + what, 9);
    }
}

BOOST_AUTO_TEST_CASE(a_checkpoint_torch_save_wrote_resumes_in_ember)
{
    temp_dir dir;
    const fs::path path = dir.path / "checkpoint.tar";
    {
        std::ofstream f(path, std::ios::binary);
        f.write(reinterpret_cast<const char*>(gold::resume_checkpoint),
                sizeof gold::resume_checkpoint);
    }
    const checkpoint ck = load<checkpoint>(path);
    BOOST_TEST(ck.epoch == 6);
    // The lesson's script saves the scheduler under its own key, which ember keeps in extras.
    const value* state = ck.extras.find("scheduler_state_dict");
    BOOST_REQUIRE(state);

    // torch.nn.Linear(1, 1): weight [1, 1] and bias [1], one param group.
    nn::parameter<double, 2> weight{tensor<double, 2>::from_shape({1, 1})};
    nn::parameter<double, 1> bias{tensor<double, 1>::from_shape({1})};
    sgd<double> opt({nn::param_ref<double>(weight), nn::param_ref<double>(bias)},
                    {.lr = 0.1, .momentum = 0.9});
    cosine_annealing_lr sched(opt, {.T_max = 3}); // T_max and eta_min come from the state
    opt.load_state_dict(ck.optimizer_state_dict);
    sched.load_state_dict(*state);
    BOOST_TEST(sched.last_epoch() == 6);
    BOOST_TEST(sched.options().eta_min == 0.001);
    for (std::size_t i = 0; i < gold::resume_lrs.size(); ++i)
    {
        opt.step();
        sched.step();
        const double lr = opt.param_groups()[0].options.lr;
        BOOST_CHECK_MESSAGE(close_to(lr, gold::resume_lrs[i]),
                            "step " << i << ": lr " << optim::detail::py_float(lr) << ", PyTorch "
                                    << optim::detail::py_float(gold::resume_lrs[i]));
    }
}

BOOST_AUTO_TEST_CASE(a_scheduler_drives_any_optimizer)
{
    nn::parameter<float, 1> p{tensor<float, 1>::from_shape({4})};
    optim::adam<float> opt({nn::param_ref<float>(p)}, {.lr = 0.1});
    cosine_annealing_lr sched(opt, {.T_max = 10, .eta_min = 0.001});
    setup s;
    cosine_annealing_lr reference(s.opt, {.T_max = 10, .eta_min = 0.001});
    for (int i = 0; i < 15; ++i)
    {
        opt.step();
        sched.step();
        reference.step();
        BOOST_TEST(opt.param_groups()[0].options.lr == s.opt.param_groups()[0].options.lr);
    }
}

// ---- the ways users get it wrong ----

BOOST_AUTO_TEST_CASE(bad_options_are_refused_with_their_name)
{
    setup s;
    auto message_has = [](const std::string& part)
    {
        return [part](const value_error& e)
        {
            const bool ok = std::string(e.what()).find(part) != std::string::npos;
            if (!ok)
                BOOST_TEST_MESSAGE("message: " << e.what());
            return ok;
        };
    };
    BOOST_CHECK_EXCEPTION(step_lr(s.opt, {}), value_error, message_has("step_size"));
    BOOST_CHECK_EXCEPTION(exponential_lr(s.opt, {}), value_error, message_has("gamma"));
    BOOST_CHECK_EXCEPTION(cosine_annealing_lr(s.opt, {.T_max = 0}), value_error,
                          message_has("T_max"));
    BOOST_CHECK_EXCEPTION(linear_lr(s.opt, {.start_factor = 0}), value_error,
                          message_has("start_factor"));
    BOOST_CHECK_EXCEPTION(linear_lr(s.opt, {.end_factor = 1.5}), value_error,
                          message_has("end_factor"));
    BOOST_CHECK_EXCEPTION(linear_lr(s.opt, {.total_iters = 0}), value_error,
                          message_has("total_iters"));
    BOOST_CHECK_EXCEPTION(step_lr(s.opt, {.step_size = 2, .last_epoch = -2}), value_error,
                          message_has("last_epoch"));
    BOOST_CHECK_EXCEPTION(optim::reduce_lr_on_plateau(s.opt, {.factor = 1.0}), value_error,
                          message_has("factor"));
    BOOST_CHECK_EXCEPTION(optim::reduce_lr_on_plateau(s.opt, {.min_lrs = {0.1}}), value_error,
                          message_has("expected 2 min_lrs"));
    // Python's ints do not overflow; ember's counts stop at 2^53, before any step could.
    constexpr std::int64_t huge = std::numeric_limits<std::int64_t>::max();
    BOOST_CHECK_EXCEPTION(cosine_annealing_lr(s.opt, {.T_max = huge}), value_error,
                          message_has("T_max: 9223372036854775807 is past the ±2^53"));
    BOOST_CHECK_EXCEPTION(step_lr(s.opt, {.step_size = huge}), value_error,
                          message_has("step_size"));
    BOOST_CHECK_EXCEPTION(linear_lr(s.opt, {.total_iters = huge}), value_error,
                          message_has("total_iters"));
    BOOST_CHECK_EXCEPTION(step_lr(s.opt, {.step_size = 2, .last_epoch = huge}), value_error,
                          message_has("last_epoch"));
    // Nothing was changed by the refused constructors.
    BOOST_TEST(s.lrs()[0] == gold::lrs[0]);
}

BOOST_AUTO_TEST_CASE(resuming_without_initial_lr_is_a_key_error_like_pytorchs)
{
    setup s;
    BOOST_CHECK_EXCEPTION(step_lr(s.opt, {.step_size = 3, .last_epoch = 5}), key_error,
                          [](const key_error& e)
                          {
                              return std::string(e.what()).find(
                                         "'initial_lr' is not specified in param_groups[0]") !=
                                     std::string::npos;
                          });
}

BOOST_AUTO_TEST_CASE(a_group_added_after_the_scheduler_is_reported_at_step)
{
    setup s;
    step_lr sched(s.opt, {.step_size = 3});
    optim::reduce_lr_on_plateau plateau(s.opt);
    nn::parameter<double, 1> extra{tensor<double, 1>::from_shape({1})};
    s.opt.add_param_group({{nn::param_ref<double>(extra)}, {.lr = 0.5}});
    BOOST_CHECK_THROW(sched.step(), value_error);
    BOOST_CHECK_THROW(plateau.step(1.0), value_error);
}

BOOST_AUTO_TEST_CASE(a_bad_state_dict_is_refused_and_changes_nothing)
{
    setup s;
    step_lr sched(s.opt, {.step_size = 3, .gamma = 0.5});
    for (int i = 0; i < 4; ++i)
        sched.step();
    const value::dict good = sched.state_dict();

    auto without = [&](std::string_view key)
    {
        value::dict d;
        for (const auto& [k, v] : good)
            if (k != key)
                d.insert(k, v);
        return d;
    };
    auto with = [&](std::string_view key, value v)
    {
        value::dict d = good;
        d.insert_or_assign(std::string(key), std::move(v));
        return d;
    };
    auto names = [](const std::string& part)
    {
        return [part](const error& e)
        {
            const bool ok = std::string(e.what()).find(part) != std::string::npos;
            if (!ok)
                BOOST_TEST_MESSAGE("message: " << e.what());
            return ok;
        };
    };

    step_lr fresh(s.opt, {.step_size = 5});
    const value::dict before = fresh.state_dict();
    BOOST_CHECK_EXCEPTION(fresh.load_state_dict(without("gamma")), key_error,
                          names("missing key 'gamma'"));
    BOOST_CHECK_EXCEPTION(fresh.load_state_dict(with("surprise", 1)), key_error,
                          names("unexpected key(s) 'surprise'"));
    BOOST_CHECK_EXCEPTION(fresh.load_state_dict(with("last_epoch", "four")), value_error,
                          names("['last_epoch']: expected an int, got str"));
    BOOST_CHECK_EXCEPTION(fresh.load_state_dict(with("base_lrs", value::list{0.1})), value_error,
                          names("expected 2 numbers"));
    BOOST_CHECK_EXCEPTION(fresh.load_state_dict(with("step_size", 0)), value_error,
                          names("step_size"));
    BOOST_CHECK_EXCEPTION(fresh.load_state_dict(value()), value_error, names("got None"));
    BOOST_CHECK_EXCEPTION(fresh.load_state_dict(with("last_epoch", std::int64_t{1} << 62)),
                          value_error, names("['last_epoch']: 4611686018427387904 is past"));
    BOOST_CHECK_EXCEPTION(fresh.load_state_dict(with("step_size", 2.5)), value_error,
                          names("['step_size']: expected an int, got the float 2.5"));
    BOOST_CHECK_EXCEPTION(fresh.step(std::numeric_limits<std::int64_t>::min()), value_error,
                          names("step(epoch)"));
    // Another scheduler's state: cosine's keys are not step_lr's.
    cosine_annealing_lr cosine(s.opt, {.T_max = 4});
    BOOST_CHECK_EXCEPTION(fresh.load_state_dict(cosine.state_dict()), key_error,
                          names("step_size"));
    BOOST_TEST((fresh.state_dict() == before));

    optim::reduce_lr_on_plateau plateau(s.opt);
    value::dict pd = plateau.state_dict();
    pd.insert_or_assign("mode", "middle");
    BOOST_CHECK_EXCEPTION(plateau.load_state_dict(pd), value_error, names("'min' or 'max'"));
    pd = plateau.state_dict();
    pd.insert_or_assign("threshold_mode", "relative");
    BOOST_CHECK_EXCEPTION(plateau.load_state_dict(pd), value_error, names("'rel' or 'abs'"));
    pd = plateau.state_dict();
    pd.insert_or_assign("num_bad_epochs", -1);
    BOOST_CHECK_EXCEPTION(plateau.load_state_dict(pd), value_error,
                          names("['num_bad_epochs']: must be >= 0, got -1"));

    fresh.load_state_dict(good);
    BOOST_TEST((fresh.state_dict() == good));
}

BOOST_AUTO_TEST_CASE(a_state_with_integral_floats_loads_as_pytorch_runs_it)
{
    // CosineAnnealingLR(T_max=10.0) runs in PyTorch as T_max=10, and its state keeps the float.
    setup s;
    cosine_annealing_lr sched(s.opt, {.T_max = 10, .eta_min = 0.001});
    for (int i = 0; i < 3; ++i)
        sched.step();
    const value::dict ints = sched.state_dict();
    value::dict floats = ints;
    floats.insert_or_assign("T_max", 10.0);
    floats.insert_or_assign("last_epoch", 3.0);
    cosine_annealing_lr resumed(s.opt, {.T_max = 4});
    resumed.load_state_dict(floats);
    BOOST_TEST((resumed.state_dict() == ints));
    BOOST_TEST(resumed.options().T_max == 10);
}

BOOST_AUTO_TEST_CASE(multi_step_milestones_load_from_a_list_or_a_counter_dict)
{
    setup s;
    multi_step_lr sched(s.opt, {.milestones = {2}});
    value::dict sd = sched.state_dict();
    sd.insert_or_assign("milestones",
                        value::list{std::int64_t{9}, std::int64_t{4}, std::int64_t{9}});
    sched.load_state_dict(sd);
    BOOST_TEST((sched.options().milestones == std::vector<std::int64_t>{9, 4, 9}));
    BOOST_TEST(py_repr(sched.state_dict().at("milestones")) == "{'9': 2, '4': 1}");
    sd.insert_or_assign("milestones", value::list{std::int64_t{9}, 4.0, 9.0});
    sched.load_state_dict(sd); // [9, 4.0, 9.0]: PyTorch compares 4 == 4.0
    BOOST_TEST((sched.options().milestones == std::vector<std::int64_t>{9, 4, 9}));
    sd.insert_or_assign("milestones", value::list{std::int64_t{9}, 4.5});
    BOOST_CHECK_THROW(sched.load_state_dict(sd), value_error);
    value::dict far;
    far.insert("9007199254740993", 1); // 2^53 + 1
    sd.insert_or_assign("milestones", far);
    BOOST_CHECK_THROW(sched.load_state_dict(sd), value_error);
    value::dict counter;
    counter.insert("x", 1);
    sd.insert_or_assign("milestones", counter);
    BOOST_CHECK_THROW(sched.load_state_dict(sd), value_error);
    // A count from a file is bounded before it sizes the list (2^40 would be 8 TB).
    value::dict huge;
    huge.insert("3", std::int64_t{1} << 40);
    sd.insert_or_assign("milestones", huge);
    BOOST_CHECK_THROW(sched.load_state_dict(sd), value_error);
    BOOST_TEST((sched.options().milestones == std::vector<std::int64_t>{9, 4, 9}));
}

BOOST_AUTO_TEST_CASE(multi_step_milestones_go_into_a_pth_file_as_pytorchs_counter_of_int_epochs)
{
    // PyTorch's MultiStepLR asks `last_epoch in milestones` with an int: with the str keys of
    // ember's dicts a scheduler resumed in PyTorch would never decay again (found by an
    // adversarial review). The live check is scripts/torch_roundtrip.py.
    setup s;
    multi_step_lr sched(s.opt, {.milestones = {4, 9, 9, 15}, .gamma = 0.3});
    checkpoint ck;
    ck.scheduler_state = sched.state_dict();
    const std::vector<std::byte> file = pytorch::to_bytes(ck);
    const std::string bytes(reinterpret_cast<const char*>(file.data()), file.size());
    // GLOBAL collections.Counter (memoized: BINPUT), EMPTY_DICT, MARK, {4: 1, 9: 2, 15: 1} as
    // BININT1 pairs, SETITEMS, TUPLE1, REDUCE: what Python's pickler writes for
    // Counter([4, 9, 9, 15]).
    const std::size_t global = bytes.find("ccollections\nCounter\nq");
    BOOST_REQUIRE(global != std::string::npos);
    static constexpr char counts[] = "}(K\x04K\x01K\x09K\x02K\x0fK\x01u\x85R";
    BOOST_TEST(bytes.compare(global + 23, sizeof counts - 1, counts) == 0);
    // It reads back as the same state, through the file too.
    temp_dir dir;
    save(ck, dir.path / "ck.tar");
    BOOST_TEST((load<checkpoint>(dir.path / "ck.tar").scheduler_state == ck.scheduler_state));

    // Only MultiStepLR's state: a dict of decimal keys elsewhere keeps its str keys.
    checkpoint other;
    other.hyperparameters.insert("milestones", value::dict{{"4", value(1)}});
    const std::vector<std::byte> plain = pytorch::to_bytes(other);
    BOOST_TEST(
        std::string(reinterpret_cast<const char*>(plain.data()), plain.size()).find("Counter") ==
        std::string::npos);
}

BOOST_AUTO_TEST_CASE(verbose_prints_what_pytorch_prints)
{
    setup s;
    std::fflush(stdout);
    // stdout to a pipe of our own for the duration.
    int fds[2];
    BOOST_REQUIRE(::pipe(fds) == 0);
    const int saved = ::dup(1);
    ::dup2(fds[1], 1);
    {
        step_lr sched(s.opt, {.step_size = 1, .gamma = 0.5, .verbose = true});
        sched.step();
        sched.step(4);
    }
    std::fflush(stdout);
    ::dup2(saved, 1);
    ::close(saved);
    ::close(fds[1]);
    std::string out;
    char buf[512];
    for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;)
        out.append(buf, static_cast<std::size_t>(n));
    ::close(fds[0]);
    BOOST_TEST(out == "Adjusting learning rate of group 0 to 1.0000e-01.\n"
                      "Adjusting learning rate of group 1 to 3.0000e-02.\n"
                      "Adjusting learning rate of group 0 to 5.0000e-02.\n"
                      "Adjusting learning rate of group 1 to 1.5000e-02.\n"
                      "Epoch 00004: adjusting learning rate of group 0 to 6.2500e-03.\n"
                      "Epoch 00004: adjusting learning rate of group 1 to 1.8750e-03.\n");
}
