#pragma once
/// @file
/// Saving a module's parameters to a file and loading them back into it, LibTorch's
/// `torch::save(module, path)` and `torch::load(module, path)`:
///
/// @code
/// ember::save(model, "model.ember");       // the file save(model.state_dict(), ...) writes
/// ember::load(model, "model.ember");       // model.load_state_dict(load<state_dict>(...))
/// @endcode
///
/// The files and every check are those of the state_dict route; what differs is the copies.
/// Parameters in host memory are saved from where they are (state_dict_view), in every format;
/// ember's container, PyTorch's zip and safetensors stream them into the file. Those three
/// formats also load in place: the file is mapped and checked (every checksum; safetensors has
/// none, so its header against the file) and, once keys, dtypes and shapes all fit, each
/// tensor is copied straight into its parameter: no state_dict is built on either side. Loading
/// other formats, and devices whose memory the host cannot read, go through a state_dict.

#include "ember/core/state_dict.hpp"
#include "ember/detail/mapped_file.hpp"
#include "ember/detail/precompiled.hpp"
#include "ember/nn/module.hpp"
#include "ember/serialize/file.hpp"

#include <filesystem>
#include <optional>
#include <string>

namespace ember
{

/// @brief Writes `model`'s state_dict to `path` crash-safely, in the format of its extension;
/// throws like save(obj, path).
template <class M>
requires nn::is_module_v<M>
void save(const M& model, const std::filesystem::path& path);

/// @brief The same in `format`, whatever the extension.
template <class M>
requires nn::is_module_v<M>
void save(const M& model, const std::filesystem::path& path, file_format format);

/// @brief Loads the state_dict in `path` into `model`, as model.load_state_dict(load<state_dict>
/// (path), strict) does: format from the bytes or the extension; nothing in the model changes
/// unless the whole file checks out and every key, dtype and shape fits. Throws what
/// load<state_dict> and load_state_dict throw, the messages starting with the file's name.
template <class M>
requires nn::is_module_v<M> nn::load_result load(M& model, const std::filesystem::path& path,
                                                 bool strict = true);

/// @brief The same from a file in `format`, whatever the extension.
template <class M>
requires nn::is_module_v<M> nn::load_result load(M& model, const std::filesystem::path& path,
                                                 file_format format, bool strict = true);

/*******************
 * implementation  *
 *******************/

namespace detail
{
/// @brief A state_dict file opened to be loaded into a module, every checksum already checked:
/// in ember's container, PyTorch's zip and safetensors, views of the tensors where they lie in
/// the mapped file (the few a view cannot show, strided or big-endian ones, copied); in the
/// other formats, the decoded state_dict. Not a template, so that it is compiled once with the
/// formats.
class state_dict_file
{
public:
    /// Throws what load<state_dict>(path[, format]) throws.
    state_dict_file(const std::filesystem::path& path, std::optional<file_format> format);
    state_dict_file(const state_dict_file&) = delete;
    state_dict_file& operator=(const state_dict_file&) = delete;

    /// The file's tensors in place, or nullptr where they were decoded (then: decoded()).
    const state_dict_view* views() const noexcept { return m_in_place ? &m_views : nullptr; }
    const state_dict& decoded() const noexcept { return m_decoded; }
    const std::string& name() const noexcept { return m_name; }
    /// io_error if part of the mapped file was lost since it was opened (file_bytes).
    void check_intact() const { m_file.check_intact(m_name); }

private:
    /// Decodes `bytes` (the mapped file) as format `f`: in place where it can.
    void read(std::span<const std::byte> bytes, file_format f);

    file_bytes m_file;
    std::string m_name;
    bool m_in_place = false;
    state_dict_view m_views;
    state_dict m_decoded; // the whole state_dict, or the tensors m_views could not show
};

template <class M>
nn::load_result load_into(M& model, const state_dict_file& file, bool strict)
{
    // load_state_dict's errors are about the model and a file: name the file.
    auto naming = [&](const auto& e) { return "'" + file.name() + "': " + e.what(); };
    try
    {
        if (const state_dict_view* views = file.views())
        {
            // The views are the mapped file: if another program cut it short while it was
            // copied, zeros were copied for what it lost. The model is then not the file's.
            auto result = model.load_state_dict(*views, strict);
            file.check_intact();
            return result;
        }
        return model.load_state_dict(file.decoded(), strict);
    }
    catch (const key_error& e)
    {
        throw key_error(naming(e));
    }
    catch (const shape_error& e)
    {
        throw shape_error(naming(e));
    }
    catch (const dtype_error& e)
    {
        throw dtype_error(naming(e));
    }
}
} // namespace detail

template <class M>
requires nn::is_module_v<M>
void save(const M& model, const std::filesystem::path& path)
{
    save(model, path, format_from_extension(path));
}

template <class M>
requires nn::is_module_v<M>
void save(const M& model, const std::filesystem::path& path, file_format format)
{
    // In host memory the parameters are written from where they are (save streams them);
    // elsewhere they are copied to the host first.
    if constexpr (M::device_type::host_memory)
        save(model.state_dict_view(), path, format);
    else
        save(model.state_dict(), path, format);
}

template <class M>
requires nn::is_module_v<M> nn::load_result load(M& model, const std::filesystem::path& path,
                                                 bool strict)
{
    return detail::load_into(model, detail::state_dict_file(path, std::nullopt), strict);
}

template <class M>
requires nn::is_module_v<M> nn::load_result load(M& model, const std::filesystem::path& path,
                                                 file_format format, bool strict)
{
    return detail::load_into(model, detail::state_dict_file(path, format), strict);
}

} // namespace ember

#if EMBER_DEFINITIONS
namespace ember::detail
{
EMBER_PRECOMPILED_INLINE state_dict_file::state_dict_file(const std::filesystem::path& path,
                                                          std::optional<file_format> format)
    : m_file(path), m_name(path.string())
{
    const std::span<const std::byte> bytes = m_file.bytes();
    const file_format f = format ? *format : detect_format(bytes, path);
    m_file.decode_checked(m_name, [&] { read(bytes, f); });
}

EMBER_PRECOMPILED_INLINE void state_dict_file::read(std::span<const std::byte> bytes, file_format f)
{
    if (f == file_format::ember && has_file_magic(bytes))
    {
        m_views = decode_container<state_dict_view>(bytes, m_name);
        m_in_place = true;
    }
    else if (f == file_format::pytorch && !has_file_magic(bytes))
    {
        // A zip's records are stored, not compressed: contiguous tensors are read where they
        // are, once the archive (every record's CRC-32) has been checked.
        pytorch::detail::archive_reader reader(bytes, quoted_name(m_name), {});
        m_views = reader.to_state_dict_view(reader.root(), "", m_decoded);
        m_in_place = true;
    }
    else if (f == file_format::safetensors)
    {
        // No checksums in this format: the header is checked against the file (every tensor's
        // dtype, shape and bytes inside it, none overlapping), and the tensors are copied from
        // where they lie, as decoding would copy them, but once. A page of every tensor is
        // read first, so that a file cut short since it was mapped is an error before the
        // model changes, as the other formats' checksum pass makes it.
        m_views = safetensors::reader(bytes, quoted_name(m_name)).to_state_dict_view();
        touch_pages(bytes);
        m_in_place = true;
    }
    else
        m_decoded = decode<state_dict>(bytes, f, m_name);
}
} // namespace ember::detail
#endif
