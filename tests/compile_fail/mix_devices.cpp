// Must NOT compile: a cpu tensor handed to a module on the Thrust OpenMP device. The build
// stops with ember's one-line message (tests/check_compile_fail.sh looks for it).
#include "ember/device/thrust_omp.hpp"
#include "ember/nn/linear.hpp"

int main()
{
    ember::nn::linear<float, ember::thrust_omp> layer(3, 2);
    ember::tensor<float, 2> x = ember::tensor<float, 2>::from_shape({4, 3});
    layer.forward(x);
}
