// Must NOT compile: a Thrust OpenMP tensor handed to a module on the cpu device.
#include "ember/device/thrust_omp.hpp"
#include "ember/nn/linear.hpp"

int main()
{
    ember::nn::linear<float> layer(3, 2);
    ember::thrust_omp::tensor_type<float, 2> x({4, 3});
    layer.forward(x);
}
