#pragma once
/// @file
/// What tests that write files and check errors share: a scratch folder removed afterwards,
/// whole-file reads and writes, the formats a model loads from in place, ember's thread count
/// for a scope, and the message of an expected exception.

#include <ember/core/threads.hpp>

#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <unistd.h>

namespace test
{

/// @brief A fresh folder under the system's temporary folder, named after `name`, this process
/// (tests run in parallel) and a count (a test may hold several), removed with everything in it
/// at the end of scope, write permission given back first (tests take it away).
struct temp_dir
{
    std::filesystem::path path;

    explicit temp_dir(const std::string& name = "ember_test")
        : path(std::filesystem::temp_directory_path() /
               (name + "_" + std::to_string(::getpid()) + "_" + std::to_string(next_number())))
    {
        std::filesystem::remove_all(path);
        std::filesystem::create_directories(path);
    }
    ~temp_dir()
    {
        std::error_code ec;
        std::filesystem::permissions(path, std::filesystem::perms::owner_all,
                                     std::filesystem::perm_options::add, ec);
        std::filesystem::remove_all(path, ec);
    }
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;

private:
    static int next_number()
    {
        static int count = 0;
        return count++;
    }
};

/// @brief The whole content of `p`.
inline std::vector<char> read_bytes(const std::filesystem::path& p)
{
    std::ifstream f(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(f), {}};
}

/// @brief Replaces `p`'s content with `b`.
inline void write_bytes(const std::filesystem::path& p, const std::vector<char>& b)
{
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f.write(b.data(), static_cast<std::streamsize>(b.size()));
}

/// @brief Runs `f` and returns the message of the E it throws (fails the test if it throws
/// nothing, or something else).
template <class E, class F>
std::string message_of(F&& f)
{
    try
    {
        f();
    }
    catch (const E& e)
    {
        return e.what();
    }
    BOOST_FAIL("expected an exception");
    return {};
}

/// @brief The extensions of the formats a model is saved in and loaded into in place: ember's
/// container, PyTorch's zip, safetensors.
inline constexpr const char* model_extensions[] = {".ember", ".pth", ".safetensors"};

/// @brief Sets ember's thread count for a scope, and puts the previous one back.
struct threads_for_scope
{
    explicit threads_for_scope(int n) : previous(ember::get_num_threads())
    {
        ember::set_num_threads(n);
    }
    ~threads_for_scope() { ember::set_num_threads(previous); }
    threads_for_scope(const threads_for_scope&) = delete;
    threads_for_scope& operator=(const threads_for_scope&) = delete;
    int previous;
};

/// @brief Whether `s` contains `part`.
inline bool contains(const std::string& s, std::string_view part)
{
    return s.find(part) != std::string::npos;
}

} // namespace test
