// state_dict, optimizer state and generator state through every cereal archive, and ember's
// file container: round trips, and a clear error for every way a file can be wrong.
#include <ember/core/generator.hpp>
#include <ember/serialize/cereal.hpp>
#include <ember/serialize/file.hpp>

#include <cereal/archives/binary.hpp>
#include <cereal/archives/json.hpp>
#include <cereal/archives/portable_binary.hpp>
#include <cereal/archives/xml.hpp>

#include <boost/mpl/list.hpp>
#include <boost/test/unit_test.hpp>

#include "test_files.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

using namespace ember;
namespace fs = std::filesystem;
using test::read_bytes;
using test::write_bytes;

// This file's scratch folders.
struct temp_dir : test::temp_dir
{
    temp_dir() : test::temp_dir("ember_test_serialize") {}
};

namespace
{
state_dict sample_state_dict()
{
    state_dict sd;
    sd.insert("fc1.weight",
              host_tensor::from(tensor<float, 2>{{1.5f, -2.f, 3.25f}, {0.f, 1e-30f, -7.f}}));
    sd.insert("fc1.bias", host_tensor::from(tensor<double, 1>{0.1, -0.2}));
    sd.insert("bn.num_batches_tracked", host_tensor::from(tensor<std::int64_t, 0>(42)));
    sd.insert("0.empty", host_tensor(dtype::float32, {0, 3}));
    return sd;
}

optim::optimizer_state sample_optimizer_state()
{
    optim::optimizer_state s;
    s.state[0].insert("momentum_buffer", host_tensor::from(tensor<float, 1>{1.f, 2.f}));
    s.state[0].insert("step", host_tensor::from(tensor<float, 0>(3.f)));
    s.state[1].insert("momentum_buffer", optim::state_value{});
    optim::param_group_state g;
    g.options.insert("lr", 0.01);
    g.options.insert("betas", std::vector<double>{0.9, 0.999});
    g.options.insert("nesterov", false);
    g.options.insert("foreach", std::monostate{});
    g.options.insert("count", std::int64_t{7});
    g.options.insert("name", std::string("backbone \"q\" \xc3\xa9")); // a group's own key
    g.params = {0, 1};
    s.param_groups.push_back(g);
    return s;
}

template <class Out, class In, class T>
T round_trip(const T& value)
{
    std::stringstream ss;
    {
        Out ar(ss);
        ar(cereal::make_nvp("value", value));
    }
    T back{};
    {
        In ar(ss);
        ar(cereal::make_nvp("value", back));
    }
    return back;
}

struct binary_archives
{
    using out = cereal::BinaryOutputArchive;
    using in = cereal::BinaryInputArchive;
};
struct portable_archives
{
    using out = cereal::PortableBinaryOutputArchive;
    using in = cereal::PortableBinaryInputArchive;
};
struct json_archives
{
    using out = cereal::JSONOutputArchive;
    using in = cereal::JSONInputArchive;
};
struct xml_archives
{
    using out = cereal::XMLOutputArchive;
    using in = cereal::XMLInputArchive;
};
using all_archives =
    boost::mpl::list<binary_archives, portable_archives, json_archives, xml_archives>;
} // namespace

BOOST_AUTO_TEST_CASE_TEMPLATE(state_dict_round_trips_through_every_archive, A, all_archives)
{
    auto sd = sample_state_dict();
    auto back = round_trip<typename A::out, typename A::in>(sd);
    BOOST_TEST(back.keys() == sd.keys());
    BOOST_TEST((back == sd));
}

BOOST_AUTO_TEST_CASE_TEMPLATE(optimizer_state_round_trips_through_every_archive, A, all_archives)
{
    auto s = sample_optimizer_state();
    auto back = round_trip<typename A::out, typename A::in>(s);
    BOOST_TEST((back == s));
}

BOOST_AUTO_TEST_CASE_TEMPLATE(generator_state_round_trips_and_continues, A, all_archives)
{
    generator g(5);
    g.normal();
    auto back = round_trip<typename A::out, typename A::in>(g.state());
    BOOST_TEST((back == g.state()));
    generator h;
    h.set_state(back);
    BOOST_TEST(h.normal() == g.normal());
}

// A string option value (a group's own key) with a NUL byte: JSON and XML cannot carry it, and
// the save says so instead of writing a file whose checksum then fails; binary formats keep it.
BOOST_AUTO_TEST_CASE(a_string_value_with_a_nul_is_refused_by_text_archives_alone)
{
    temp_dir dir;
    auto s = sample_optimizer_state();
    s.param_groups[0].options.insert_or_assign("name", std::string("a\0b", 3));
    for (const char* name : {"opt.json", "opt.xml"})
        BOOST_CHECK_EXCEPTION(
            save(s, dir.path / name), value_error,
            [](const value_error& e)
            { return std::string(e.what()).find("NUL byte") != std::string::npos; });
    for (const char* name : {"opt.ember", "opt.bin", "opt.pth"})
    {
        save(s, dir.path / name);
        BOOST_TEST((load<optim::optimizer_state>(dir.path / name) == s), name);
    }
}

BOOST_AUTO_TEST_CASE(file_round_trip_keeps_every_byte)
{
    temp_dir dir;
    auto sd = sample_state_dict();
    save(sd, dir.path / "model.ember");
    auto back = load<state_dict>(dir.path / "model.ember");
    BOOST_TEST((back == sd));
    auto s = sample_optimizer_state();
    save(s, dir.path / "opt.ember");
    BOOST_TEST((load<optim::optimizer_state>(dir.path / "opt.ember") == s));
}

BOOST_AUTO_TEST_CASE(missing_file_is_an_io_error_naming_it)
{
    try
    {
        load<state_dict>("/nonexistent/ember/model.pth");
        BOOST_FAIL("expected io_error");
    }
    catch (const io_error& e)
    {
        std::string msg = e.what();
        BOOST_TEST(msg.find("/nonexistent/ember/model.pth") != std::string::npos);
        BOOST_TEST(msg.find("No such file") != std::string::npos);
    }
}

BOOST_AUTO_TEST_CASE(saving_into_a_missing_folder_is_an_io_error)
{
    BOOST_CHECK_THROW(save(sample_state_dict(), "/nonexistent/ember/model.pth"), io_error);
}

BOOST_AUTO_TEST_CASE(every_truncation_is_a_format_error)
{
    temp_dir dir;
    save(sample_state_dict(), dir.path / "whole.ember");
    auto bytes = read_bytes(dir.path / "whole.ember");
    for (std::size_t n = 0; n < bytes.size(); ++n)
    {
        write_bytes(dir.path / "cut.ember", {bytes.begin(), bytes.begin() + n});
        BOOST_CHECK_THROW(load<state_dict>(dir.path / "cut.ember"), format_error);
    }
}

BOOST_AUTO_TEST_CASE(every_single_bit_flip_is_caught)
{
    temp_dir dir;
    save(sample_state_dict(), dir.path / "whole.ember");
    auto bytes = read_bytes(dir.path / "whole.ember");
    for (std::size_t i = 0; i < bytes.size(); ++i)
        for (int bit = 0; bit < 8; ++bit)
        {
            auto flipped = bytes;
            flipped[i] = static_cast<char>(flipped[i] ^ (1 << bit));
            write_bytes(dir.path / "flip.ember", flipped);
            BOOST_CHECK_THROW(load<state_dict>(dir.path / "flip.ember"), error);
        }
}

BOOST_AUTO_TEST_CASE(trailing_bytes_are_reported)
{
    temp_dir dir;
    save(sample_state_dict(), dir.path / "m.ember");
    auto bytes = read_bytes(dir.path / "m.ember");
    bytes.push_back('x');
    write_bytes(dir.path / "m.ember", bytes);
    try
    {
        load<state_dict>(dir.path / "m.ember");
        BOOST_FAIL("expected format_error");
    }
    catch (const format_error& e)
    {
        BOOST_TEST(std::string(e.what()).find("trailing bytes") != std::string::npos);
    }
}

BOOST_AUTO_TEST_CASE(a_text_file_is_not_an_ember_file)
{
    temp_dir dir;
    std::string text = "this is a text file that happens to be long enough for a header\n";
    write_bytes(dir.path / "notes.ember", {text.begin(), text.end()});
    try
    {
        load<state_dict>(dir.path / "notes.ember");
        BOOST_FAIL("expected format_error");
    }
    catch (const format_error& e)
    {
        std::string msg = e.what();
        BOOST_TEST(msg.find("notes.ember") != std::string::npos);
        BOOST_TEST(msg.find("not an ember file") != std::string::npos);
    }
}

BOOST_AUTO_TEST_CASE(loading_the_wrong_content_kind_says_what_is_inside)
{
    temp_dir dir;
    save(sample_optimizer_state(), dir.path / "opt.ember");
    try
    {
        load<state_dict>(dir.path / "opt.ember");
        BOOST_FAIL("expected format_error");
    }
    catch (const format_error& e)
    {
        BOOST_TEST(std::string(e.what()).find("not a state_dict") != std::string::npos);
    }
}

namespace
{
// Rewrites a header field and re-seals the header checksum, as a newer writer would.
void patch_header(std::vector<char>& b, std::size_t offset, std::uint32_t value)
{
    for (int i = 0; i < 4; ++i)
        b[offset + i] = static_cast<char>((value >> (8 * i)) & 0xff);
    auto crc = detail::crc32_of({reinterpret_cast<const std::byte*>(b.data()), 36});
    for (int i = 0; i < 4; ++i)
        b[36 + i] = static_cast<char>((crc >> (8 * i)) & 0xff);
}
} // namespace

BOOST_AUTO_TEST_CASE(a_newer_container_version_names_both_versions)
{
    temp_dir dir;
    save(sample_state_dict(), dir.path / "m.ember");
    auto bytes = read_bytes(dir.path / "m.ember");
    patch_header(bytes, 8, detail::container_version + 1);
    patch_header(bytes, 16, 20300);
    write_bytes(dir.path / "m.ember", bytes);
    try
    {
        load<state_dict>(dir.path / "m.ember");
        BOOST_FAIL("expected format_error");
    }
    catch (const format_error& e)
    {
        std::string msg = e.what();
        const auto newer = std::to_string(detail::container_version + 1);
        const auto ours = std::to_string(detail::container_version);
        BOOST_TEST(msg.find("container version " + newer + " by ember 2.3.0") != std::string::npos);
        BOOST_TEST(msg.find("reads up to version " + ours) != std::string::npos);
    }
}

BOOST_AUTO_TEST_CASE(a_huge_declared_tensor_fails_without_allocating)
{
    // A portable-binary payload whose tensor claims 2^40 float32 elements in 100 bytes.
    std::stringstream ss;
    {
        cereal::PortableBinaryOutputArchive ar(ss);
        ar(sample_state_dict());
    }
    std::string payload = ss.str();
    // Find the shape [2, 3] of fc1.weight (two little-endian int64 after a size tag of 2).
    std::string needle(24, '\0');
    needle[0] = 2;
    needle[8] = 2;
    needle[16] = 3;
    auto pos = payload.find(needle);
    BOOST_REQUIRE(pos != std::string::npos);
    payload[pos + 8 + 5] = 1; // first extent becomes 2 + 2^40
    detail::span_source src({reinterpret_cast<const std::byte*>(payload.data()), payload.size()});
    std::istream is(&src);
    state_dict sd;
    detail::scoped_load_budget budget(payload.size());
    cereal::PortableBinaryInputArchive ar(is);
    BOOST_CHECK_THROW(ar(sd), format_error);
}

BOOST_AUTO_TEST_CASE(saving_over_an_existing_file_replaces_it_and_leaves_no_temporaries)
{
    temp_dir dir;
    save(sample_state_dict(), dir.path / "m.ember");
    state_dict other;
    other.insert("w", host_tensor::from(tensor<float, 1>{9.f}));
    save(other, dir.path / "m.ember");
    BOOST_TEST((load<state_dict>(dir.path / "m.ember") == other));
    std::size_t files = 0;
    for ([[maybe_unused]] auto& entry : fs::directory_iterator(dir.path))
        ++files;
    BOOST_TEST(files == 1u);
}

// ---- large files: streamed saving, mapped loading, one-pass checksums -----------------------

namespace
{
// Two tensors above the streaming size (detail::large_block) and a file above
// detail::file_bytes::map_threshold, with small records between them.
state_dict large_state_dict()
{
    state_dict sd = sample_state_dict();
    tensor<float, 2> w = tensor<float, 2>::from_shape({512, 300});
    for (std::size_t i = 0; i < w.size(); ++i)
        w.data()[i] = static_cast<float>(i % 1009) * 0.25f - 3.f;
    sd.insert("big.weight", host_tensor::from(w));
    sd.insert("between", host_tensor::from(tensor<std::int64_t, 1>{1, 2, 3}));
    tensor<double, 1> v = tensor<double, 1>::from_shape({100000});
    for (std::size_t i = 0; i < v.size(); ++i)
        v.data()[i] = static_cast<double>(i) / 7.0;
    sd.insert("big.bias", host_tensor::from(v));
    return sd;
}

std::size_t find_bytes(const std::vector<char>& hay, const void* needle, std::size_t n)
{
    const auto* p = static_cast<const char*>(needle);
    auto it = std::search(hay.begin(), hay.end(), p, p + n);
    BOOST_REQUIRE(it != hay.end());
    return static_cast<std::size_t>(it - hay.begin());
}

// Re-seals the payload checksum (offset 32) and the header checksum over a changed payload.
void reseal(std::vector<char>& b)
{
    const auto* p = reinterpret_cast<const std::byte*>(b.data());
    const std::uint32_t crc = detail::crc32_of({p + detail::header_size, b.size() - 40});
    for (int i = 0; i < 4; ++i)
        b[32 + i] = static_cast<char>((crc >> (8 * i)) & 0xff);
    patch_header(b, 8, detail::container_version);
}
} // namespace

BOOST_AUTO_TEST_CASE(a_streamed_container_is_byte_for_byte_the_in_memory_encoding)
{
    temp_dir dir;
    const auto sd = large_state_dict();
    save(sd, dir.path / "big.ember");
    const auto bytes = read_bytes(dir.path / "big.ember");
    BOOST_TEST(bytes.size() > detail::file_bytes::map_threshold);
    const auto expected = detail::encode_container(sd);
    BOOST_TEST(bytes.size() == expected.size());
    BOOST_TEST((std::memcmp(bytes.data(), expected.data(), expected.size()) == 0));
    BOOST_TEST(detail::file_bytes(dir.path / "big.ember").mapped());
    BOOST_TEST((load<state_dict>(dir.path / "big.ember") == sd));
    // Small files are read, not mapped (so file_ops.read still sees them).
    save(sample_state_dict(), dir.path / "small.ember");
    BOOST_TEST(!detail::file_bytes(dir.path / "small.ember").mapped());
}

BOOST_AUTO_TEST_CASE(a_flipped_bit_in_a_large_tensor_is_a_payload_checksum_mismatch)
{
    temp_dir dir;
    const auto sd = large_state_dict();
    save(sd, dir.path / "big.ember");
    auto bytes = read_bytes(dir.path / "big.ember");
    const auto& big = sd.at("big.weight");
    const std::size_t at = find_bytes(bytes, big.bytes().data(), 64) + 100000;
    bytes[at] = static_cast<char>(bytes[at] ^ 0x10);
    write_bytes(dir.path / "bad.ember", bytes);
    try
    {
        load<state_dict>(dir.path / "bad.ember");
        BOOST_FAIL("expected format_error");
    }
    catch (const format_error& e)
    {
        const std::string msg = e.what();
        BOOST_TEST_INFO("message: " << msg);
        BOOST_TEST(msg.find("payload checksum mismatch") != std::string::npos);
        BOOST_TEST(msg.find("bad.ember") != std::string::npos);
    }
}

BOOST_AUTO_TEST_CASE(a_large_tensor_whose_own_checksum_fails_is_named_by_its_key)
{
    // The payload checksum re-sealed over a changed tensor: only the tensor's own CRC-32,
    // computed in the same pass as the copy, can catch it.
    temp_dir dir;
    const auto sd = large_state_dict();
    save(sd, dir.path / "big.ember");
    auto bytes = read_bytes(dir.path / "big.ember");
    const std::size_t at = find_bytes(bytes, sd.at("big.bias").bytes().data(), 64) + 700000;
    bytes[at] = static_cast<char>(bytes[at] ^ 0x01);
    reseal(bytes);
    write_bytes(dir.path / "bad.ember", bytes);
    try
    {
        load<state_dict>(dir.path / "bad.ember");
        BOOST_FAIL("expected format_error");
    }
    catch (const format_error& e)
    {
        const std::string msg = e.what();
        BOOST_TEST_INFO("message: " << msg);
        BOOST_TEST(msg.find("key 'big.bias'") != std::string::npos);
        BOOST_TEST(msg.find("data checksum mismatch") != std::string::npos);
    }
}

BOOST_AUTO_TEST_CASE(a_truncated_large_file_is_a_format_error)
{
    temp_dir dir;
    save(large_state_dict(), dir.path / "big.ember");
    auto bytes = read_bytes(dir.path / "big.ember");
    for (std::size_t n : {bytes.size() - 1, bytes.size() / 2, std::size_t{1} << 20})
    {
        write_bytes(dir.path / "cut.ember", {bytes.begin(), bytes.begin() + n});
        BOOST_CHECK_THROW(load<state_dict>(dir.path / "cut.ember"), format_error);
    }
}

BOOST_AUTO_TEST_CASE(a_write_failing_inside_a_large_tensor_keeps_the_previous_file)
{
    temp_dir dir;
    const fs::path target = dir.path / "big.ember";
    save(sample_state_dict(), target);
    const auto before = read_bytes(target);
    static int writes = 0;
    writes = 0;
    detail::file_ops ops;
    ops.write = [](int fd, const void* b, std::size_t n) -> ssize_t
    {
        if (++writes == 3) // inside big.weight's data, written piece by piece
        {
            errno = ENOSPC;
            return -1;
        }
        return ::write(fd, b, n);
    };
    {
        detail::scoped_file_ops failing(ops);
        try
        {
            save(large_state_dict(), target);
            BOOST_FAIL("expected io_error");
        }
        catch (const io_error& e)
        {
            const std::string msg = e.what();
            BOOST_TEST_INFO("message: " << msg);
            BOOST_TEST(msg.find("write failed after") != std::string::npos);
            BOOST_TEST(msg.find(std::strerror(ENOSPC)) != std::string::npos);
        }
    }
    BOOST_TEST((read_bytes(target) == before));
    std::size_t files = 0;
    for ([[maybe_unused]] auto& entry : fs::directory_iterator(dir.path))
        ++files;
    BOOST_TEST(files == 1u);
}

BOOST_AUTO_TEST_CASE(checksumming_streams_agree_with_a_plain_crc)
{
    std::vector<std::byte> data(300000);
    for (std::size_t i = 0; i < data.size(); ++i)
        data[i] = static_cast<std::byte>((i * 2654435761u) >> 13);
    const std::uint32_t whole = detail::crc32_of(data);
    const std::span<const std::byte> all(data);
    BOOST_TEST(detail::crc32_concat(detail::crc32_of(all.first(1234)),
                                    detail::crc32_of(all.subspan(1234)),
                                    data.size() - 1234) == whole);
    // Read as a small piece, a large block and a rest left unread.
    detail::checksumming_source src(all);
    std::vector<char> out(200000);
    BOOST_TEST(src.sgetn(out.data(), 10) == 10);
    BOOST_TEST(src.sgetn(out.data(), 200000) == 200000);
    BOOST_TEST((std::memcmp(out.data(), data.data() + 10, out.size()) == 0));
    // The block's checksum is remembered for the bytes where they were copied to.
    const std::span<const std::byte> copied(reinterpret_cast<const std::byte*>(out.data()),
                                            out.size());
    BOOST_TEST(detail::crc32_of_block(copied) == detail::crc32_of(all.subspan(10, 200000)));
    BOOST_TEST(src.crc() == whole);
}

namespace
{
// A checksumming_sink's Writer that keeps every write, to see where the writes fall in the file.
struct recording_writer
{
    std::vector<std::byte> file;
    std::vector<std::size_t> ends; // the file offset where each write ended
    void write(std::span<const std::byte> bytes)
    {
        if (bytes.empty())
            return;
        file.insert(file.end(), bytes.begin(), bytes.end());
        ends.push_back(file.size());
    }
    std::size_t written() const noexcept { return file.size(); }
};
} // namespace

BOOST_AUTO_TEST_CASE(a_large_block_is_written_in_pieces_that_end_on_piece_boundaries_of_the_file)
{
    // Whatever precedes a tensor's bytes, the writes of those bytes end on multiples of
    // crc_piece in the file (the last one excepted), so the page cache keeps the file in folios
    // of that size; the bytes and their checksums are the same as ever.
    const std::size_t piece = detail::crc_piece;
    std::vector<std::byte> block(3 * piece + 12345);
    for (std::size_t i = 0; i < block.size(); ++i)
        block[i] = static_cast<std::byte>((i * 2654435761u) >> 11);
    for (std::size_t before :
         {std::size_t(0), std::size_t(1), std::size_t(1000), piece - 1, piece, piece + 77})
    {
        BOOST_TEST_CONTEXT(before << " bytes before the block")
        {
            const std::size_t header = 16;
            recording_writer writer;
            std::vector<std::byte> front(before > header ? before - header : 0, std::byte{7});
            const std::size_t start = header + front.size();
            std::uint32_t block_crc = 0;
            {
                detail::checksumming_sink<recording_writer> sink(writer, header);
                sink.sputn(reinterpret_cast<const char*>(front.data()),
                           static_cast<std::streamsize>(front.size()));
                sink.sputn(reinterpret_cast<const char*>(block.data()),
                           static_cast<std::streamsize>(block.size()));
                // the block's CRC-32 as the sink remembered it, from its pieces
                BOOST_TEST(detail::last_block_crc().data == block.data());
                block_crc = detail::crc32_of_block(block);
                sink.flush();
                BOOST_TEST(sink.size() == front.size() + block.size());
                std::vector<std::byte> checked(front);
                checked.insert(checked.end(), block.begin(), block.end());
                BOOST_TEST(sink.crc() == detail::crc32_of(checked));
            }
            BOOST_TEST(block_crc == detail::crc32_of(block));
            BOOST_REQUIRE(writer.file.size() == start + block.size());
            BOOST_TEST(std::equal(block.begin(), block.end(), writer.file.begin() + start));
            // The block's writes: every end but the last on a piece boundary, none longer than
            // a piece.
            std::vector<std::size_t> block_ends;
            for (std::size_t end : writer.ends)
                if (end > start)
                    block_ends.push_back(end);
            BOOST_REQUIRE(!block_ends.empty());
            BOOST_TEST(block_ends.back() == start + block.size());
            std::size_t previous = start;
            for (std::size_t i = 0; i < block_ends.size(); ++i)
            {
                BOOST_TEST(block_ends[i] - previous <= piece);
                if (i + 1 < block_ends.size())
                    BOOST_TEST(block_ends[i] % piece == 0u);
                previous = block_ends[i];
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(crc32_agrees_with_zlib_at_every_length_and_alignment)
{
    // crc32_update is ISA-L's (carry-less multiplication, per CPU); zlib's own crc32 is the
    // reference, and a nonzero start checks that checksums chain as zlib's do.
    std::vector<std::byte> data(4096 + 64);
    std::uint32_t x = 12345;
    for (auto& b : data)
    {
        x = x * 1103515245u + 12345u;
        b = static_cast<std::byte>(x >> 16);
    }
    for (std::size_t offset : {0, 1, 7, 16, 33})
        for (std::size_t n = 0; n <= 4096; n += (n < 300 ? 1 : 61))
            for (std::uint32_t start : {0u, 0xdeadbeefu})
            {
                const std::span<const std::byte> s(data.data() + offset, n);
                const auto expected = static_cast<std::uint32_t>(
                    ::crc32(start, reinterpret_cast<const Bytef*>(s.data()), static_cast<uInt>(n)));
                BOOST_TEST_CONTEXT("offset " << offset << ", " << n << " bytes, start " << start)
                BOOST_TEST(detail::crc32_update(start, s) == expected);
            }
}
