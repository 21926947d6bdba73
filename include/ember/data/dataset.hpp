#pragma once
/// @file
/// Datasets (torch.utils.data.Dataset, TensorDataset, Subset). A dataset knows its size and
/// copies the samples it is asked for into a batch it is given, so a data_loader assembles every
/// batch in buffers it keeps: nothing is allocated per sample, and nothing per batch once the
/// buffers have their shape.
///
/// @code
/// ember::data::tensor_dataset ds(X, y);      // X [N, F] float, y [N, 1] float or [N] int64
/// auto [x, t] = ember::data::materialize(ds); // the whole set as one batch
/// @endcode

#include "ember/core/error.hpp"
#include "ember/core/tensor.hpp"

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <numeric>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace ember::data
{

/// @brief What a data_loader needs from a dataset: `size()` samples, and `gather(indices, batch)`
/// that copies the samples at `indices`, in that order, into `batch` (a `batch_type`, resized
/// only when its shape has to change).
template <class D>
concept dataset = requires(const D& d, std::span<const std::size_t> indices,
                           typename D::batch_type& batch)
{
    {
        d.size()
        } -> std::convertible_to<std::size_t>;
    d.gather(indices, batch);
};

namespace detail
{
template <class T>
struct is_sample_tensor : std::false_type
{
};
template <class T, std::size_t N>
struct is_sample_tensor<tensor<T, N>> : std::bool_constant<(N >= 1)>
{
};
} // namespace detail

/// @brief An ember::tensor of rank 1 or more; its first dimension indexes the samples.
template <class T>
concept sample_tensor = detail::is_sample_tensor<T>::value;

/// @brief Samples are rows of tensors that share their first dimension (torch TensorDataset).
/// A batch is a tuple of the same tensor types, `[batch, ...]`.
template <sample_tensor... Tensors>
requires(sizeof...(Tensors) >= 1) class tensor_dataset
{
public:
    using batch_type = std::tuple<Tensors...>;

    /// @brief Takes the tensors (move them in to avoid a copy); throws shape_error unless all
    /// have the same first dimension.
    explicit tensor_dataset(Tensors... tensors);

    std::size_t size() const noexcept { return std::get<0>(m_tensors).shape()[0]; }

    /// @brief The I-th tensor, all samples.
    template <std::size_t I>
    const auto& tensor() const noexcept
    {
        return std::get<I>(m_tensors);
    }
    const batch_type& tensors() const noexcept { return m_tensors; }

    /// @brief Copies rows `indices` of every tensor into `out`; throws value_error on an index
    /// out of range.
    void gather(std::span<const std::size_t> indices, batch_type& out) const;

private:
    batch_type m_tensors;
};

/// @brief The samples of `data` at `indices` (torch Subset). It refers to `data`, which must
/// outlive it.
template <dataset D>
class subset
{
public:
    using dataset_type = D;
    using batch_type = typename D::batch_type;

    /// @brief Throws value_error if an index is not below `data.size()`.
    subset(const D& data, std::vector<std::size_t> indices);
    subset(const D&&, std::vector<std::size_t>) = delete; // would dangle

    std::size_t size() const noexcept { return m_indices.size(); }
    const D& dataset() const noexcept { return *m_data; }
    /// @brief Positions in the underlying dataset, in this subset's order.
    std::span<const std::size_t> indices() const noexcept { return m_indices; }

    void gather(std::span<const std::size_t> indices, batch_type& out) const;

private:
    const D* m_data;
    std::vector<std::size_t> m_indices;
    // Indices translated to the underlying dataset; kept so that gather() does not allocate.
    // This makes a subset unsafe to gather from in two threads at once.
    mutable std::vector<std::size_t> m_mapped;
};

/// @brief The whole dataset as one batch, in order (e.g. a validation set for one forward).
template <dataset D>
typename D::batch_type materialize(const D& data);

/*******************
 * implementation  *
 *******************/

namespace detail
{

template <class T, std::size_t N>
void gather_rows(const tensor<T, N>& source, std::span<const std::size_t> indices,
                 tensor<T, N>& out)
{
    std::array<std::size_t, N> shape;
    shape[0] = indices.size();
    std::size_t row = 1;
    for (std::size_t d = 1; d < N; ++d)
    {
        shape[d] = source.shape()[d];
        row *= shape[d];
    }
    resize_if_needed(out, shape);
    const T* from = source.data();
    T* to = out.data();
    for (std::size_t k = 0; k < indices.size(); ++k)
        std::copy_n(from + indices[k] * row, row, to + k * row);
}

inline void check_indices(std::span<const std::size_t> indices, std::size_t size, const char* what)
{
    for (std::size_t i : indices)
        if (i >= size)
            throw value_error(std::string(what) + ": index " + std::to_string(i) +
                              " is out of range for " + std::to_string(size) + " samples");
}

} // namespace detail

template <sample_tensor... Tensors>
requires(sizeof...(Tensors) >= 1) tensor_dataset<Tensors...>::tensor_dataset(Tensors... tensors)
    : m_tensors(std::move(tensors)...)
{
    const std::size_t n = size();
    std::size_t which = 0;
    auto check = [&](const auto& t)
    {
        if (t.shape()[0] != n)
            throw shape_error("tensor_dataset: tensor " + std::to_string(which) + " of shape " +
                              shape_string(t.shape()) + " has " + std::to_string(t.shape()[0]) +
                              " samples, expected " + std::to_string(n) +
                              " (the first dimension of tensor 0, of shape " +
                              shape_string(std::get<0>(m_tensors).shape()) + ")");
        ++which;
    };
    std::apply([&](const auto&... t) { (check(t), ...); }, m_tensors);
}

template <sample_tensor... Tensors>
requires(sizeof...(Tensors) >=
         1) void tensor_dataset<Tensors...>::gather(std::span<const std::size_t> indices,
                                                    batch_type& out) const
{
    detail::check_indices(indices, size(), "tensor_dataset");
    [&]<std::size_t... I>(std::index_sequence<I...>)
    {
        (detail::gather_rows(std::get<I>(m_tensors), indices, std::get<I>(out)), ...);
    }
    (std::index_sequence_for<Tensors...>{});
}

template <dataset D>
subset<D>::subset(const D& data, std::vector<std::size_t> indices)
    : m_data(&data), m_indices(std::move(indices))
{
    detail::check_indices(m_indices, data.size(), "subset");
}

template <dataset D>
void subset<D>::gather(std::span<const std::size_t> indices, batch_type& out) const
{
    detail::check_indices(indices, size(), "subset");
    m_mapped.resize(indices.size()); // keeps its capacity: no allocation once grown
    for (std::size_t k = 0; k < indices.size(); ++k)
        m_mapped[k] = m_indices[indices[k]];
    m_data->gather(m_mapped, out);
}

template <dataset D>
typename D::batch_type materialize(const D& data)
{
    std::vector<std::size_t> all(data.size());
    std::iota(all.begin(), all.end(), std::size_t{0});
    typename D::batch_type out;
    data.gather(all, out);
    return out;
}

} // namespace ember::data
