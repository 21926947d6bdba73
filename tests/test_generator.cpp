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

BOOST_AUTO_TEST_CASE(normal_with_a_mean_and_stddev_matches_torch_bit_for_bit)
{
    // PyTorch's kernels round sample * std + mean once (a fused multiply-add); rounding the
    // product first moved float64 samples by an ulp.
    // torch.manual_seed(42); torch.empty(5, dtype=torch.float64).normal_(0.1, 0.3)
    generator g(42);
    auto t = tensor<double, 1>::from_shape({5});
    normal_(t, 0.1, 0.3, g);
    const double expected[] = {0.20100710631515767, 0.1386428215409769, 0.17033870900845952,
                               0.16909990837438357, -0.23685691302145107};
    for (std::size_t i = 0; i < 5; ++i)
        BOOST_TEST(t(i) == expected[i], "element " << i);

    // The 16-wide fill and its redrawn tail:
    // torch.manual_seed(0); torch.empty(20, dtype=torch.float64).normal_(-2.7, 1.9)
    generator h(0);
    auto u = tensor<double, 1>::from_shape({20});
    normal_(u, -2.7, 1.9, h);
    const double expected_fill[] = {
        -7.0897824204449345, -3.4091766363897524, -4.715551689237944,  -0.8009322259157657,
        -2.737933026724749,  -2.3004302088067803, -2.363340232352035,  -4.2779690969160535,
        -2.2464356894804762, -1.3062960997981605, -5.211575475370061,  -0.20185840612546588,
        -4.005307018682738,  0.12734120004027724, -3.5519900289517574, -4.392905766824401,
        -1.417770667171393,  -0.7109557837352157, -2.4068391605714803, -4.124793893394469};
    for (std::size_t i = 0; i < 20; ++i)
        BOOST_TEST(u(i) == expected_fill[i], "element " << i << " of 20");

    // float32 below 16 values: the float64 sample rounded to float.
    // torch.manual_seed(7); torch.empty(3).normal_(0.1, 0.3)
    generator k(7);
    auto f = tensor<float, 1>::from_shape({3});
    normal_(f, 0.1, 0.3, k);
    BOOST_TEST(f(0) == 0.05596147105097771f);
    BOOST_TEST(f(1) == 0.33584240078926086f);
    BOOST_TEST(f(2) == 0.3840464949607849f);
}
