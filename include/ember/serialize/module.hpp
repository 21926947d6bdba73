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
/// In ember's container format, parameters in host memory are written from where they are
/// (state_dict_view), and a load maps the file, checks every checksum there and, once keys,
/// dtypes and shapes all fit, copies each tensor straight into its parameter: no state_dict is
/// built on either side. PyTorch's zip is loaded the same way (its records are stored
/// uncompressed and checked when the archive opens). Other formats, saving in other formats,
/// and devices whose memory the host cannot read go through a state_dict.

#include "ember/nn/module.hpp"
#include "ember/serialize/file.hpp"

#include <filesystem>
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
template <class M>
nn::load_result load_into(M& model, std::span<const std::byte> bytes, file_format format,
                          const std::string& name, bool strict)
{
    // load_state_dict's errors are about the model and a file: name the file.
    auto naming = [&](const auto& e) { return "'" + name + "': " + e.what(); };
    try
    {
        if (format == file_format::ember && has_file_magic(bytes))
            return model.load_state_dict(decode_container<state_dict_view>(bytes, name), strict);
        if (format == file_format::pytorch && !has_file_magic(bytes))
        {
            // A zip's records are stored, not compressed: contiguous tensors are read where they
            // are, once the archive (every record's CRC-32) has been checked.
            pytorch::detail::archive_reader reader(bytes, quoted_name(name), {});
            state_dict copies; // the tensors that cannot be viewed (strided, big-endian)
            return model.load_state_dict(reader.to_state_dict_view(reader.root(), "", copies),
                                         strict);
        }
        return model.load_state_dict(decode<state_dict>(bytes, format, name), strict);
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
    if constexpr (M::device_type::host_memory)
    {
        if (format == file_format::ember)
            return detail::save_container(model.state_dict_view(), path);
    }
    save(model.state_dict(), path, format);
}

template <class M>
requires nn::is_module_v<M> nn::load_result load(M& model, const std::filesystem::path& path,
                                                 bool strict)
{
    const detail::file_bytes file(path);
    const std::span<const std::byte> bytes = file.bytes();
    return detail::load_into(model, bytes, detail::detect_format(bytes, path), path.string(),
                             strict);
}

template <class M>
requires nn::is_module_v<M> nn::load_result load(M& model, const std::filesystem::path& path,
                                                 file_format format, bool strict)
{
    const detail::file_bytes file(path);
    return detail::load_into(model, file.bytes(), format, path.string(), strict);
}

} // namespace ember
