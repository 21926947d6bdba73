#pragma once
/// @file
/// Evaluation metrics over host tensors: accuracy (from class scores and labels, or from
/// binary probabilities and a threshold), mean absolute error and mean squared error. Each
/// returns a double, accumulated in double left to right: the number PyTorch computes in float64
/// (e.g. `(scores.argmax(1) == labels).double().mean()`, `F.l1_loss(p.double(), t.double())`),
/// exactly for the accuracies and to the last bits for the mean errors, which PyTorch sums in
/// another order (vectorized).
///
/// ```cpp
/// const double acc = ember::metrics::accuracy(logits, labels); // [N, C] and int64 [N]
/// const double mae = ember::metrics::mean_absolute_error(predictions, targets);
/// ```

#include "ember/core/error.hpp"
#include "ember/core/tensor.hpp"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

namespace ember::metrics
{

/// @brief The fraction of rows of `scores` [N, C] (logits or probabilities) whose largest
/// score is at the row's label in `labels` [N]. Ties go to the first largest, and NaN counts
/// as the largest, as in torch.argmax. Throws shape_error if the shapes disagree, value_error
/// for no samples or a label outside [0, C).
template <class T>
double accuracy(const tensor<T, 2>& scores, const tensor<std::int64_t, 1>& labels);

/// @brief The fraction of `probabilities` whose prediction (probability > threshold) equals
/// the target (0 or 1; float or int64), shapes equal (e.g. [N] or [N, 1]). Throws shape_error
/// if the shapes differ, value_error for no samples or a target other than 0 or 1.
template <class T, class U, std::size_t N>
double binary_accuracy(const tensor<T, N>& probabilities, const tensor<U, N>& targets,
                       double threshold = 0.5);

/// @brief mean(|prediction - target|) over every element (torch.nn.functional.l1_loss).
/// Throws shape_error if the shapes differ, value_error if they are empty.
template <class T, std::size_t N>
double mean_absolute_error(const tensor<T, N>& predictions, const tensor<T, N>& targets);

/// @brief mean((prediction - target)²) over every element (torch.nn.functional.mse_loss).
template <class T, std::size_t N>
double mean_squared_error(const tensor<T, N>& predictions, const tensor<T, N>& targets);

/*******************
 * implementation  *
 *******************/

namespace detail
{

template <class A, class B>
void check_same_shape(const A& a, const B& b, const char* what)
{
    if (a.shape() != b.shape())
        throw shape_error(std::string(what) + ": predictions of shape " + shape_string(a.shape()) +
                          " and targets of shape " + shape_string(b.shape()) +
                          ", expected the same shape");
    if (a.size() == 0)
        throw value_error(std::string(what) + ": no samples (shape " + shape_string(a.shape()) +
                          ")");
}

template <class T, std::size_t N, class F>
double mean_of(const tensor<T, N>& p, const tensor<T, N>& t, const char* what, F term)
{
    check_same_shape(p, t, what);
    const T* a = p.data();
    const T* b = t.data();
    const std::size_t n = p.size();
    double s = 0;
    for (std::size_t i = 0; i < n; ++i)
        s += term(static_cast<double>(a[i]) - static_cast<double>(b[i]));
    return s / static_cast<double>(n);
}

} // namespace detail

template <class T>
double accuracy(const tensor<T, 2>& scores, const tensor<std::int64_t, 1>& labels)
{
    const std::size_t n = scores.shape()[0];
    const std::size_t c = scores.shape()[1];
    if (labels.shape()[0] != n)
        throw shape_error("accuracy: scores of shape " + shape_string(scores.shape()) +
                          " and labels of shape " + shape_string(labels.shape()) +
                          ", expected labels [" + std::to_string(n) + "]");
    if (n == 0 || c == 0)
        throw value_error("accuracy: no samples (scores of shape " + shape_string(scores.shape()) +
                          ")");
    const T* s = scores.data();
    const std::int64_t* y = labels.data();
    std::size_t correct = 0;
    for (std::size_t i = 0; i < n; ++i)
    {
        if (y[i] < 0 || static_cast<std::size_t>(y[i]) >= c)
            throw value_error("accuracy: labels[" + std::to_string(i) +
                              "] = " + std::to_string(y[i]) + " is not a class index in [0, " +
                              std::to_string(c) + ")");
        const T* row = s + i * c;
        std::size_t best = 0;
        for (std::size_t j = 1; j < c && !std::isnan(row[best]); ++j)
            if (row[j] > row[best] || std::isnan(row[j]))
                best = j;
        correct += best == static_cast<std::size_t>(y[i]);
    }
    return static_cast<double>(correct) / static_cast<double>(n);
}

template <class T, class U, std::size_t N>
double binary_accuracy(const tensor<T, N>& probabilities, const tensor<U, N>& targets,
                       double threshold)
{
    detail::check_same_shape(probabilities, targets, "binary_accuracy");
    const T* p = probabilities.data();
    const U* t = targets.data();
    const std::size_t n = probabilities.size();
    std::size_t correct = 0;
    for (std::size_t i = 0; i < n; ++i)
    {
        if (!(t[i] == U(0) || t[i] == U(1)))
            throw value_error("binary_accuracy: targets[" + std::to_string(i) + "] = " +
                              std::to_string(static_cast<double>(t[i])) + ", expected 0 or 1");
        const bool predicted = static_cast<double>(p[i]) > threshold;
        correct += predicted == (t[i] == U(1));
    }
    return static_cast<double>(correct) / static_cast<double>(n);
}

template <class T, std::size_t N>
double mean_absolute_error(const tensor<T, N>& predictions, const tensor<T, N>& targets)
{
    return detail::mean_of(predictions, targets, "mean_absolute_error",
                           [](double d) { return std::fabs(d); });
}

template <class T, std::size_t N>
double mean_squared_error(const tensor<T, N>& predictions, const tensor<T, N>& targets)
{
    return detail::mean_of(predictions, targets, "mean_squared_error",
                           [](double d) { return d * d; });
}

} // namespace ember::metrics
