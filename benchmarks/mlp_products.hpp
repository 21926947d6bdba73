#pragma once
/// @file
/// The roofline of the MLP's training step: the matrix products it cannot do without, alone, on
/// buffers of the same shapes: three forward, three weight gradients and two input gradients
/// (the first layer's input needs none). Through ember's float products (detail::gemm: oneDNN's
/// where ember is built with it, else OpenBLAS's), or through OpenBLAS's cblas_sgemm, the one
/// LibTorch's products go to. Used by bench_ember and bench_interleaved.
/// On buffers of its own, or on a model's own weights and gradients (bench_interleaved's floor:
/// the products and the optimizer's update on the same memory a training step uses).

#include "common.hpp"

#include <ember/detail/blas.hpp>

#include <cblas.h>

#include <algorithm>
#include <cstddef>
#include <functional>
#include <vector>

namespace bench
{

/// The three layers' weights and their gradients, row-major [out, in] each.
struct mlp_weights
{
    float* w[3];
    float* g[3];
    /// Where set, at batch 1: keeps layer i's weight gradient as the outer product of its dy
    /// and x in place of their product, as ember's linear does at batch 1
    /// (parameter::keep_grad_as_outer), for the floor of bench_interleaved.
    std::function<void(int layer, const float* dy, const float* x)> keep_outer;
};

class mlp_products
{
public:
    /// On weights and gradients of its own, common.hpp's initial weights; through OpenBLAS
    /// when `openblas`, else through ember's float products.
    explicit mlp_products(std::size_t batch, bool openblas = false)
        : mlp_products(batch, mlp_weights{})
    {
        m_openblas = openblas;
        for (int i = 0; i < 3; ++i)
        {
            m_own_w[i] = mlp_layer(i).weight;
            m_own_g[i].assign(m_own_w[i].size(), 0.0f);
            m_model.w[i] = m_own_w[i].data();
            m_model.g[i] = m_own_g[i].data();
        }
    }

    /// On `model`'s weights and gradients, which it reads and writes as a step would.
    mlp_products(std::size_t batch, const mlp_weights& model)
        : m_batch(static_cast<int>(batch)), m_model(model), m_x(mlp_inputs(batch)),
          m_h0(batch * mlp_hidden, 0.5f), m_h1(batch * mlp_hidden, 0.5f),
          m_o(batch * mlp_classes, 0.5f), m_dh1(batch * mlp_hidden), m_dh0(batch * mlp_hidden)
    {
    }

    // m_model may point into m_own_w and m_own_g: a copy would point into the original's.
    mlp_products(const mlp_products&) = delete;
    mlp_products& operator=(const mlp_products&) = delete;

    /// The eight products of one step.
    void run() { run(true); }

    /// The three forward products alone: what a step must finish before it has a gradient to
    /// update from (adam_divider.hpp).
    void run_forward() { run(false); }

    /// Multiply-adds of one run().
    double macs() const
    {
        const double in = mlp_in, hid = mlp_hidden, out = mlp_classes;
        return m_batch * (2.0 * (in * hid + hid * hid + hid * out) + hid * hid + hid * out);
    }

private:
    void run(bool with_backward)
    {
        const int b = m_batch;
        float* const* w = m_model.w;
        float* const* g = m_model.g;
        const int in = mlp_in, hid = mlp_hidden, out = mlp_classes;
        // forward: h = x W^T, or h^T = W x^T where that way round is the faster one, as ember's
        // linear decides it (detail::transposed_product_faster()), so that the roofline stays
        // the fastest products, not ember's. (Into the same buffers: the products' time does not
        // depend on the values they read.)
        const auto transposed = [b](int out_features, int in_features)
        {
            return ember::detail::transposed_product_faster(static_cast<std::size_t>(b),
                                                            static_cast<std::size_t>(out_features),
                                                            static_cast<std::size_t>(in_features));
        };
        if (transposed(hid, in))
            gemm(false, true, hid, b, in, w[0], in, m_x.data(), in, 1.0f, m_h0.data(), b);
        else
            gemm(false, true, b, hid, in, m_x.data(), in, w[0], in, 1.0f, m_h0.data(), hid);
        if (transposed(hid, hid))
            gemm(false, true, hid, b, hid, w[1], hid, m_h0.data(), hid, 1.0f, m_h1.data(), b);
        else
            gemm(false, true, b, hid, hid, m_h0.data(), hid, w[1], hid, 1.0f, m_h1.data(), hid);
        if (transposed(out, hid))
            gemm(false, true, out, b, hid, w[2], hid, m_h1.data(), hid, 1.0f, m_o.data(), b);
        else
            gemm(false, true, b, out, hid, m_h1.data(), hid, w[2], hid, 1.0f, m_o.data(), out);
        // backward: dW = dy^T x, dx = dy W. The weight gradients are written, not added to
        // (beta = 0): after zero_grad() that is all a step needs, and since 743eed5 it is what
        // ember's linear does (with beta = 1 they were also read: a slower roofline).
        if (with_backward)
        {
            weight_gradient(2, out, hid, m_o.data(), m_h1.data(), g[2]);
            gemm(false, false, b, hid, out, m_o.data(), out, w[2], hid, 0.0f, m_dh1.data(), hid);
            weight_gradient(1, hid, hid, m_dh1.data(), m_h0.data(), g[1]);
            gemm(false, false, b, hid, hid, m_dh1.data(), hid, w[1], hid, 0.0f, m_dh0.data(), hid);
            weight_gradient(0, hid, in, m_dh0.data(), m_x.data(), g[0]);
        }
        // keep the forward outputs (beta = 1) finite across millions of iterations
        std::fill(m_h0.begin(), m_h0.end(), 0.5f);
        std::fill(m_h1.begin(), m_h1.end(), 0.5f);
        std::fill(m_o.begin(), m_o.end(), 0.5f);
    }

    // dW = dy^T x into g, [rows, cols]; or kept as dy and x (mlp_weights::keep_outer).
    void weight_gradient(int layer, int rows, int cols, const float* dy, const float* x, float* g)
    {
        if (m_batch == 1 && m_model.keep_outer)
            m_model.keep_outer(layer, dy, x);
        else
            gemm(true, false, rows, cols, m_batch, dy, rows, x, cols, 0.0f, g, cols);
    }

    void gemm(bool ta, bool tb, int m, int n, int k, const float* a, int lda, const float* bb,
              int ldb, float beta, float* c, int ldc) const
    {
        if (m_openblas)
            cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
                        tb ? CblasTrans : CblasNoTrans, m, n, k, 1.0f, a, lda, bb, ldb, beta, c,
                        ldc);
        else
            ember::detail::gemm(ta, tb, std::size_t(m), std::size_t(n), std::size_t(k), 1.0f, a,
                                std::size_t(lda), bb, std::size_t(ldb), beta, c, std::size_t(ldc));
    }

    int m_batch;
    bool m_openblas = false;
    mlp_weights m_model;                       // what the products read and write
    std::vector<float> m_own_w[3], m_own_g[3]; // empty when on a model's weights
    std::vector<float> m_x, m_h0, m_h1, m_o, m_dh1, m_dh0;
};

} // namespace bench
