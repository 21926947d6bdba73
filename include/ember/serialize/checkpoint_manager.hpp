#pragma once
/// @file
/// checkpoint_manager: the last N checkpoints of a run in one folder, and a resume that only
/// trusts a checkpoint that loads whole.
///
/// ```cpp
/// ember::checkpoint_manager checkpoints("runs/lesson", {.keep_last = 3});
/// if (auto resumed = checkpoints.load_latest())    // newest that fully validates
///     restore(*resumed);
/// ...
/// checkpoints.save(ckpt);                           // runs/lesson/ckpt-000123.ember
/// ```
///
/// Files are named `<prefix><number><extension>`, the number (global step or epoch) zero-padded
/// to six digits, so they also sort by name up to 999999. save() writes the new file crash-safely
/// before it prunes old ones, so a crash at any moment leaves at least the checkpoints that were
/// there. latest() and load_latest() walk from the highest number down and take the first file that
/// loads completely (header, checksums, every tensor), passing over corrupt and truncated files
/// and never looking at the temporaries an interrupted save leaves (`.ckpt-000123.ember.tmp-*`).
/// In ember's container (the default format), pruning counts toward keep_last only files whose
/// header says they are whole checkpoints (detail::container_looks_like_checkpoint: 40 bytes
/// and the file's size are read, no payload), so a truncated file, or one whose header is
/// damaged or not a checkpoint's, never takes the place of a good one: such files older than
/// the kept ones go with them, newer ones stay for the user to look at (a flipped bit in a
/// payload shows only on loading, where load_latest() passes over it). In PyTorch's format the
/// same holds for files that do not end as a whole zip archive (detail::zip_looks_whole: its
/// end records, from the last 64 KiB at most). The cereal formats have neither, and telling a
/// whole file would mean reading it: every file of theirs counts.
/// load_latest() and save() delete the temporaries whose save is over (a save in progress holds its
/// temporary locked, detail::temporary_lock), so managers in several processes may save into one
/// folder; each prunes what all of them wrote to its keep_last.

#include "ember/core/error.hpp"
#include "ember/detail/file_io.hpp"
#include "ember/serialize/checkpoint.hpp"
#include "ember/serialize/file.hpp"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace ember
{

/// @brief What a checkpoint_manager numbers its files by.
enum class checkpoint_numbering
{
    global_step, ///< checkpoint::global_step (optimizer steps so far)
    epoch,       ///< checkpoint::epoch
};

/// @brief checkpoint_manager's settings.
struct checkpoint_manager_options
{
    /// Checkpoints kept after each save (in the container, those whose header says they are
    /// whole; in PyTorch's format, those that end as a whole zip; damaged files newer than
    /// them are kept too); 0 keeps all.
    std::size_t keep_last = 3;
    checkpoint_numbering number_by = checkpoint_numbering::global_step;
    std::string prefix = "ckpt-";
    std::string extension = ".ember";
    file_format format = file_format::ember; ///< the format written and read, whatever the name
};

/// @brief Keeps the last N checkpoints of a run in a folder and resumes from the newest whole
/// one.
class checkpoint_manager
{
public:
    using options_type = checkpoint_manager_options;

    /// @brief Manages `folder`, creating it if it does not exist (io_error if that fails).
    explicit checkpoint_manager(std::filesystem::path folder, options_type options = {});

    /// @brief Writes `c` as the checkpoint numbered by its global step or epoch (per the
    /// options), replacing one of the same number; then deletes stale temporaries and every
    /// file numbered below the newest keep_last whole-looking checkpoints (the one just written
    /// always counts and stays). Returns the file's path.
    std::filesystem::path save(const checkpoint& c);
    /// @brief Writes `c` under an explicit number (>= 0).
    std::filesystem::path save(const checkpoint& c, std::int64_t number);

    /// @brief The newest checkpoint that loads whole, or none; files passed over are listed by
    /// skipped().
    std::optional<std::filesystem::path> latest();
    /// @brief The newest checkpoint that loads whole, loaded, or none. Deletes stale temporaries.
    std::optional<checkpoint> load_latest();

    /// @brief The checkpoint files in the folder (by name only, not validated), oldest first.
    std::vector<std::filesystem::path> checkpoints() const;
    /// @brief Deletes temporaries that interrupted saves of checkpoints left; returns how many.
    std::size_t remove_temporaries() const;
    /// @brief "file: reason" for each file the last latest() / load_latest() passed over.
    const std::vector<std::string>& skipped() const noexcept { return m_skipped; }

    /// @brief The path of the checkpoint numbered `number`.
    std::filesystem::path path_for(std::int64_t number) const;
    const std::filesystem::path& folder() const noexcept { return m_folder; }
    const options_type& options() const noexcept { return m_options; }

private:
    struct entry
    {
        std::int64_t number;
        std::filesystem::path path;
    };
    std::vector<entry> entries() const; // ascending by number
    bool parse_number(const std::string& filename, std::int64_t& number) const;
    std::optional<std::filesystem::path> find_latest(checkpoint* out);
    void prune(std::int64_t just_written) const;

    std::filesystem::path m_folder;
    options_type m_options;
    std::vector<std::string> m_skipped;
};

/*******************
 * implementation  *
 *******************/

inline checkpoint_manager::checkpoint_manager(std::filesystem::path folder, options_type options)
    : m_folder(std::move(folder)), m_options(std::move(options))
{
    if (m_options.prefix.empty() || m_options.prefix.find('/') != std::string::npos)
        throw value_error("checkpoint_manager: prefix '" + m_options.prefix +
                          "' must be a non-empty file name part");
    std::error_code ec;
    std::filesystem::create_directories(m_folder, ec);
    if (ec)
        throw io_error("checkpoint_manager: cannot create folder '" + m_folder.string() +
                       "': " + ec.message());
}

inline std::filesystem::path checkpoint_manager::path_for(std::int64_t number) const
{
    if (number < 0)
        throw value_error("checkpoint_manager: checkpoint number " + std::to_string(number) +
                          " is negative");
    std::string digits = std::to_string(number);
    if (digits.size() < 6)
        digits.insert(0, 6 - digits.size(), '0');
    return m_folder / (m_options.prefix + digits + m_options.extension);
}

inline bool checkpoint_manager::parse_number(const std::string& name, std::int64_t& number) const
{
    const std::string& pre = m_options.prefix;
    const std::string& ext = m_options.extension;
    if (name.size() <= pre.size() + ext.size() || !name.starts_with(pre) || !name.ends_with(ext))
        return false;
    const std::string digits = name.substr(pre.size(), name.size() - pre.size() - ext.size());
    if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return false;
    // Every number path_for takes, up to the largest int64 (19 digits): a file save() wrote
    // must be found again. A number beyond it is no checkpoint's (from_chars: no exception).
    const auto [end, err] = std::from_chars(digits.data(), digits.data() + digits.size(), number);
    return err == std::errc() && end == digits.data() + digits.size();
}

inline std::vector<checkpoint_manager::entry> checkpoint_manager::entries() const
{
    std::vector<entry> found;
    std::error_code ec;
    for (const auto& item : std::filesystem::directory_iterator(m_folder, ec))
    {
        std::int64_t number = 0;
        if (parse_number(item.path().filename().string(), number) && item.is_regular_file(ec))
            found.push_back({number, item.path()});
    }
    if (ec)
        throw io_error("checkpoint_manager: cannot list '" + m_folder.string() +
                       "': " + ec.message());
    std::sort(found.begin(), found.end(),
              [](const entry& a, const entry& b) { return a.number < b.number; });
    return found;
}

inline std::vector<std::filesystem::path> checkpoint_manager::checkpoints() const
{
    std::vector<std::filesystem::path> paths;
    for (auto& e : entries())
        paths.push_back(e.path);
    return paths;
}

inline std::size_t checkpoint_manager::remove_temporaries() const
{
    // detail::atomic_write names its temporaries "." + target name + ".tmp-" + digits
    // (detail::temporary_name; it cuts the name short only past 229 bytes, which a checkpoint's
    // reaches only with a prefix of some 200 bytes: those temporaries are not recognised here).
    std::size_t removed = 0;
    std::error_code ec;
    std::vector<std::filesystem::path> stale;
    for (const auto& item : std::filesystem::directory_iterator(m_folder, ec))
    {
        const std::string name = item.path().filename().string();
        const auto tmp = name.rfind(".tmp-");
        std::int64_t number = 0;
        // One whose save is still going on (another manager's, another process's) is locked
        // by its writer (detail::temporary_lock), and left alone.
        if (name.starts_with(".") && tmp != std::string::npos &&
            parse_number(name.substr(1, tmp - 1), number) &&
            !detail::temporary_lock::held(item.path()))
            stale.push_back(item.path());
    }
    for (const auto& p : stale)
        if (std::filesystem::remove(p, ec))
            ++removed;
    return removed;
}

inline std::filesystem::path checkpoint_manager::save(const checkpoint& c)
{
    return save(c, m_options.number_by == checkpoint_numbering::epoch ? c.epoch : c.global_step);
}

inline std::filesystem::path checkpoint_manager::save(const checkpoint& c, std::int64_t number)
{
    const std::filesystem::path path = path_for(number);
    remove_temporaries();
    ember::save(c, path, m_options.format); // whole and durable before anything is deleted
    prune(number);
    return path;
}

inline void checkpoint_manager::prune(std::int64_t just_written) const
{
    if (m_options.keep_last == 0)
        return;
    // The one just written counts first, then the highest-numbered others whose header says
    // they are whole. A file that does not look whole is not counted: while fewer than
    // keep_last are kept it stays (newer than a kept one: the user may want to see it), after
    // that it goes with the rest. Only headers are read, so a prune reads no file's payload.
    std::size_t kept = 1;
    std::error_code ec;
    std::vector<entry> all = entries();
    for (auto it = all.rbegin(); it != all.rend(); ++it)
    {
        if (it->number == just_written)
            continue;
        if (kept < m_options.keep_last)
        {
            if (detail::looks_whole(it->path, m_options.format))
                ++kept;
            continue;
        }
        // A file that cannot be deleted now is deleted by a later save; the save succeeded.
        std::filesystem::remove(it->path, ec);
    }
}

inline std::optional<std::filesystem::path> checkpoint_manager::find_latest(checkpoint* out)
{
    m_skipped.clear();
    std::vector<entry> all = entries();
    for (auto it = all.rbegin(); it != all.rend(); ++it)
    {
        try
        {
            checkpoint c = ember::load<checkpoint>(it->path, m_options.format);
            if (out)
                *out = std::move(c);
            return it->path;
        }
        catch (const error& e)
        {
            m_skipped.push_back(it->path.string() + ": " + e.what());
        }
    }
    return std::nullopt;
}

inline std::optional<std::filesystem::path> checkpoint_manager::latest()
{
    return find_latest(nullptr);
}

inline std::optional<checkpoint> checkpoint_manager::load_latest()
{
    remove_temporaries();
    checkpoint c;
    if (find_latest(&c))
        return c;
    return std::nullopt;
}

} // namespace ember
