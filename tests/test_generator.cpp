// The generator draws exactly what PyTorch's CPU generator draws under the same seed; the
// expected numbers below were printed by torch 1.13 (python3 -c "import torch; ...").
#include <ember/core/generator.hpp>

#include <boost/test/unit_test.hpp>

using namespace ember;

BOOST_AUTO_TEST_CASE(randn_after_manual_seed_42_matches_torch)
{
    manual_seed(42);
    // torch.manual_seed(42); torch.randn(1), torch.randn(1), torch.randn(1), torch.randn(1)
    BOOST_TEST(randn<float>({1})(0) == 0.33669036626815796f);
    BOOST_TEST(randn<float>({1})(0) == 0.12880940735340118f);
    BOOST_TEST(randn<float>({1})(0) == 0.23446236550807953f);
    BOOST_TEST(randn<float>({1})(0) == 0.23033303022384644f);
}

BOOST_AUTO_TEST_CASE(randn_of_16_or_more_uses_torch_block_fill)
{
    // torch.manual_seed(0); torch.randn(20, dtype=torch.float64)[:4] and [-1]
    generator g(0);
    auto t = randn<double>({20}, g);
    BOOST_TEST(t(0) == -2.310411800234176, boost::test_tools::tolerance(1e-15));
    BOOST_TEST(t(1) == -0.3732508612577643, boost::test_tools::tolerance(1e-15));
    BOOST_TEST(t(19) == -0.7498915228391941, boost::test_tools::tolerance(1e-15));
}

BOOST_AUTO_TEST_CASE(uniform_float_matches_torch_uniform_)
{
    // torch.manual_seed(42); torch.empty(3).uniform_(-0.5, 0.5)
    generator g(42);
    auto t = tensor<float, 1>::from_shape({3});
    uniform_(t, -0.5, 0.5, g);
    BOOST_TEST(t(0) == 0.3822692632675171f);
    BOOST_TEST(t(1) == 0.4150039553642273f);
    BOOST_TEST(t(2) == -0.11713624000549316f);
}

BOOST_AUTO_TEST_CASE(saved_state_continues_the_same_sequence)
{
    generator g(7);
    g.normal(); // leaves a cached second sample behind
    auto saved = g.state();
    std::vector<double> first;
    for (int i = 0; i < 5; ++i)
        first.push_back(g.normal());
    generator h(123);
    h.set_state(saved);
    for (int i = 0; i < 5; ++i)
        BOOST_TEST(h.normal() == first[i]);
}

BOOST_AUTO_TEST_CASE(reseeding_drops_the_cached_normal)
{
    generator g(42);
    double a = g.normal();
    g.normal();
    g.manual_seed(42);
    BOOST_TEST(g.normal() == a);
}
