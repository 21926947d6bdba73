#pragma once
/// @file
/// The roofline of the MLP's training step: the matrix products it cannot do without, alone, in
/// OpenBLAS, on buffers of the same shapes: three forward, three weight gradients and two input
/// gradients (the first layer's input needs none). Used by bench_ember and bench_interleaved.

#include "common.hpp"

#include <cblas.h>

#include <algorithm>
#include <cstddef>
#include <vector>

namespace bench
{

class mlp_products
{
public:
    explicit mlp_products(std::size_t batch)
        : m_batch(static_cast<int>(batch)), m_x(mlp_inputs(batch)), m_w0(mlp_layer(0).weight),
          m_w1(mlp_layer(1).weight), m_w2(mlp_layer(2).weight), m_h0(batch * mlp_hidden, 0.5f),
          m_h1(batch * mlp_hidden, 0.5f), m_o(batch * mlp_classes, 0.5f), m_g0(m_w0.size()),
          m_g1(m_w1.size()), m_g2(m_w2.size()), m_dh1(batch * mlp_hidden), m_dh0(batch * mlp_hidden)
    {
    }

    /// The eight products of one step.
    void run()
    {
        const int b = m_batch;
        const int in = mlp_in, hid = mlp_hidden, out = mlp_classes;
        // forward: h = x W^T
        gemm(false, true, b, hid, in, m_x.data(), in, m_w0.data(), in, 1.0f, m_h0.data(), hid);
        gemm(false, true, b, hid, hid, m_h0.data(), hid, m_w1.data(), hid, 1.0f, m_h1.data(), hid);
        gemm(false, true, b, out, hid, m_h1.data(), hid, m_w2.data(), hid, 1.0f, m_o.data(), out);
        // backward: dW += dy^T x, dx = dy W
        gemm(true, false, out, hid, b, m_o.data(), out, m_h1.data(), hid, 1.0f, m_g2.data(), hid);
        gemm(false, false, b, hid, out, m_o.data(), out, m_w2.data(), hid, 0.0f, m_dh1.data(), hid);
        gemm(true, false, hid, hid, b, m_dh1.data(), hid, m_h0.data(), hid, 1.0f, m_g1.data(), hid);
        gemm(false, false, b, hid, hid, m_dh1.data(), hid, m_w1.data(), hid, 0.0f, m_dh0.data(),
             hid);
        gemm(true, false, hid, in, b, m_dh0.data(), hid, m_x.data(), in, 1.0f, m_g0.data(), in);
        // keep the accumulating outputs finite across millions of iterations
        std::fill(m_h0.begin(), m_h0.end(), 0.5f);
        std::fill(m_h1.begin(), m_h1.end(), 0.5f);
        std::fill(m_o.begin(), m_o.end(), 0.5f);
    }

    /// Multiply-adds of one run().
    double macs() const
    {
        const double in = mlp_in, hid = mlp_hidden, out = mlp_classes;
        return m_batch * (2.0 * (in * hid + hid * hid + hid * out) + hid * hid + hid * out);
    }

private:
    static void gemm(bool ta, bool tb, int m, int n, int k, const float* a, int lda,
                     const float* bb, int ldb, float beta, float* c, int ldc)
    {
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    m, n, k, 1.0f, a, lda, bb, ldb, beta, c, ldc);
    }

    int m_batch;
    std::vector<float> m_x, m_w0, m_w1, m_w2;
    std::vector<float> m_h0, m_h1, m_o, m_g0, m_g1, m_g2, m_dh1, m_dh0;
};

} // namespace bench
