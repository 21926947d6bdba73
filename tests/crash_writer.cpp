// Saves state_dicts to one path, again and again, until it is killed: the victim of the SIGKILL
// stress test in test_crash_safety.cpp.
//
//   crash_writer PATH FIRST_VERSION WORDS
//
// Writes 'R' to stdout once started, then after each save of version v returns, the 8 bytes of
// v. The test kills it at a random moment and checks that PATH holds the last reported version
// or the one after it, whole.
#include "crash_versions.hpp"

#include <ember/serialize/file.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>

#include <unistd.h>

namespace
{
void report(const void* bytes, std::size_t n)
{
    if (::write(STDOUT_FILENO, bytes, n) != static_cast<ssize_t>(n))
        std::_Exit(3); // the test stopped listening
}
} // namespace

int main(int argc, char** argv)
{
    if (argc != 4)
    {
        std::fprintf(stderr, "usage: crash_writer PATH FIRST_VERSION WORDS\n");
        return 2;
    }
    const char* path = argv[1];
    std::int64_t v = std::strtoll(argv[2], nullptr, 10);
    const auto words = static_cast<std::size_t>(std::strtoull(argv[3], nullptr, 10));
    try
    {
        // Build the next version before reporting ready, so the kill lands in save, not here.
        auto sd = crash_test::version_state(v, words);
        report("R", 1);
        for (;; ++v)
        {
            ember::save(sd, path);
            report(&v, sizeof v);
            sd = crash_test::version_state(v + 1, words);
        }
    }
    catch (const std::exception& e)
    {
        std::fprintf(stderr, "crash_writer: %s\n", e.what());
        return 1;
    }
}
