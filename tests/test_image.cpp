// Image decoding: the shared photos decode to PIL's pixels (FNV-1a hashes of
// PIL 13's Image.open(f).convert("RGB").tobytes()), PNGs written here with libpng in every colour
// type decode to PIL's convert("RGB") of them, and broken, foreign and oversized files are refused
// with FormatError/IoError naming the file.
#include <gtest/gtest.h>

#include <png.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/image.h"
#include "testing.h"

using namespace lowbit;
using lowbit::test::fnv1a;

namespace {

struct PngSpec {
  int width = 0, height = 0, color_type = PNG_COLOR_TYPE_RGB, bit_depth = 8;
  bool interlaced = false;
  std::vector<uint8_t> data;            // packed rows as PNG stores them (big-endian 16-bit)
  std::vector<png_color> palette;       // PNG_COLOR_TYPE_PALETTE
  std::vector<uint8_t> palette_alpha;   // tRNS for the palette
  bool header_only = false;             // signature, IHDR and a junk IDAT (for budget tests)
};

// Writes spec to path with libpng (an independent encoder: the decoder must read what it wrote).
void write_png(const std::string& path, const PngSpec& spec) {
  FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_TRUE(f);
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    std::fclose(f);
    FAIL() << "libpng write failed";
  }
  png_init_io(png, f);
  png_set_IHDR(png, info, png_uint_32(spec.width), png_uint_32(spec.height), spec.bit_depth, spec.color_type,
               spec.interlaced ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  if (!spec.palette.empty())
    png_set_PLTE(png, info, spec.palette.data(), int(spec.palette.size()));
  if (!spec.palette_alpha.empty())
    png_set_tRNS(png, info, spec.palette_alpha.data(), int(spec.palette_alpha.size()), nullptr);
  png_write_info(png, info);
  if (spec.header_only) {
    // An IDAT chunk header, so that the reader gets past png_read_info; its data is never read.
    const uint8_t junk[16] = {};
    png_write_chunk(png, reinterpret_cast<png_const_bytep>("IDAT"), junk, sizeof(junk));
  } else {
    const size_t rowbytes = png_get_rowbytes(png, info);
    std::vector<png_bytep> rows(static_cast<size_t>(spec.height));
    for (int y = 0; y < spec.height; ++y)
      rows[size_t(y)] = const_cast<png_bytep>(spec.data.data()) + size_t(y) * rowbytes;
    png_write_image(png, rows.data());
    png_write_end(png, nullptr);
  }
  png_destroy_write_struct(&png, &info);
  std::fclose(f);
}

std::string bytes_of(const std::vector<uint8_t>& v) { return std::string(v.begin(), v.end()); }

// Expects `fn` to throw E whose message names `path` and contains `needle`.
template <class E, class Fn>
void expect_error(Fn fn, const std::string& path, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "no error for " << path;
  } catch (const E& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(path), std::string::npos) << what;
    EXPECT_NE(what.find(needle), std::string::npos) << what;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type for " << path << ": " << e.what();
  }
}

}  // namespace

TEST(Image, SniffsMagicBytes) {
  const uint8_t jpg[] = {0xff, 0xd8, 0xff, 0xe0};
  const uint8_t png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  const uint8_t txt[] = {'h', 'e', 'l', 'l', 'o', '\n', 'x', 'y'};
  EXPECT_EQ(sniff_image_format(jpg, sizeof(jpg)), ImageFormat::Jpeg);
  EXPECT_EQ(sniff_image_format(png, sizeof(png)), ImageFormat::Png);
  EXPECT_EQ(sniff_image_format(txt, sizeof(txt)), ImageFormat::Unknown);
  EXPECT_EQ(sniff_image_format(png, 4), ImageFormat::Unknown);
}

// Baseline (extreme_ironing, 4:2:0) and progressive (waterview) JPEGs: every byte equals PIL's
// decode (libjpeg-turbo, islow IDCT, fancy upsampling), checked through a hash of all bytes.
TEST(Image, SharedPhotosEqualPil) {
  LOWBIT_REQUIRE_SHARED(ironing, "data/images/extreme_ironing.jpg");
  LOWBIT_REQUIRE_SHARED(water, "data/images/waterview.jpg");
  Image a = decode_image(ironing);
  EXPECT_EQ(a.width, 570);
  EXPECT_EQ(a.height, 380);
  EXPECT_EQ(a.pixels[0], 23);
  EXPECT_EQ(a.pixels[1], 24);
  EXPECT_EQ(a.pixels[2], 19);
  EXPECT_EQ(fnv1a(a.pixels), 0xa138a75ab6577a82ull);
  Image b = decode_image(water);
  EXPECT_EQ(b.width, 1000);
  EXPECT_EQ(b.height, 667);
  EXPECT_EQ(fnv1a(b.pixels), 0x78832721aa367957ull);
}

TEST(Image, PngColourTypesConvertLikePil) {
  const std::string dir = test::temp_dir("png_types");
  const int w = 5, h = 3;
  auto check_rgb = [&](const std::string& name, const PngSpec& spec, const std::vector<uint8_t>& want) {
    const std::string path = dir + "/" + name + ".png";
    write_png(path, spec);
    Image img = decode_image(path);
    EXPECT_EQ(img.width, w) << name;
    EXPECT_EQ(img.height, h) << name;
    EXPECT_EQ(img.pixels, want) << name;
  };
  std::vector<uint8_t> rgb(w * h * 3);
  for (size_t i = 0; i < rgb.size(); ++i) rgb[i] = uint8_t(i * 37 + 11);

  PngSpec s{w, h, PNG_COLOR_TYPE_RGB, 8};
  s.data = rgb;
  check_rgb("rgb", s, rgb);
  s.interlaced = true;  // Adam7
  check_rgb("rgb_interlaced", s, rgb);

  // RGBA: alpha dropped, not composited (PIL's convert("RGB")).
  PngSpec sa{w, h, PNG_COLOR_TYPE_RGBA, 8};
  for (int i = 0; i < w * h; ++i) {
    sa.data.insert(sa.data.end(), rgb.begin() + i * 3, rgb.begin() + i * 3 + 3);
    sa.data.push_back(uint8_t(i * 17));  // includes fully transparent pixels
  }
  check_rgb("rgba", sa, rgb);

  // Gray: replicated into R, G, B.
  PngSpec sg{w, h, PNG_COLOR_TYPE_GRAY, 8};
  std::vector<uint8_t> gray_rgb;
  for (int i = 0; i < w * h; ++i) {
    sg.data.push_back(uint8_t(i * 16 + 3));
    gray_rgb.insert(gray_rgb.end(), 3, uint8_t(i * 16 + 3));
  }
  check_rgb("gray", sg, gray_rgb);

  // Gray + alpha: gray replicated, alpha dropped.
  PngSpec sga{w, h, PNG_COLOR_TYPE_GRAY_ALPHA, 8};
  for (int i = 0; i < w * h; ++i) {
    sga.data.push_back(uint8_t(i * 16 + 3));
    sga.data.push_back(uint8_t(255 - i));
  }
  check_rgb("gray_alpha", sga, gray_rgb);

  // 2-bit gray: PIL's "L;2" unpacker scales by 85. Row of 5 pixels = 2 bytes.
  PngSpec s2{w, h, PNG_COLOR_TYPE_GRAY, 2};
  std::vector<uint8_t> g2_rgb;
  for (int y = 0; y < h; ++y) {
    uint8_t packed[2] = {0, 0};
    for (int x = 0; x < w; ++x) {
      const int v = (x + y) % 4;
      packed[x / 4] |= uint8_t(v << (6 - 2 * (x % 4)));
      g2_rgb.insert(g2_rgb.end(), 3, uint8_t(v * 85));
    }
    s2.data.insert(s2.data.end(), packed, packed + 2);
  }
  check_rgb("gray2", s2, g2_rgb);

  // Palette with transparency: looked up, transparency ignored.
  PngSpec sp{w, h, PNG_COLOR_TYPE_PALETTE, 8};
  std::vector<uint8_t> pal_rgb;
  for (int k = 0; k < 4; ++k) sp.palette.push_back(png_color{uint8_t(10 + k), uint8_t(100 + 3 * k), uint8_t(250 - k)});
  sp.palette_alpha = {0, 128};
  for (int i = 0; i < w * h; ++i) {
    const int k = (i * 3) % 4;
    sp.data.push_back(uint8_t(k));
    pal_rgb.insert(pal_rgb.end(), {sp.palette[size_t(k)].red, sp.palette[size_t(k)].green, sp.palette[size_t(k)].blue});
  }
  check_rgb("palette_trns", sp, pal_rgb);

  // 16-bit RGB: the high byte of each sample (PIL's "RGB;16B").
  PngSpec s16{w, h, PNG_COLOR_TYPE_RGB, 16};
  for (size_t i = 0; i < rgb.size(); ++i) {
    s16.data.push_back(rgb[i]);
    s16.data.push_back(uint8_t(255 - rgb[i]));  // low byte must not round the high one up
  }
  check_rgb("rgb16", s16, rgb);
}

TEST(Image, Gray16PngIsRefused) {
  const std::string dir = test::temp_dir("png16");
  PngSpec s{4, 2, PNG_COLOR_TYPE_GRAY, 16};
  s.data.assign(4 * 2 * 2, 0x80);
  const std::string path = dir + "/gray16.png";
  write_png(path, s);
  expect_error<FormatError>([&] { decode_image(path); }, path, "16-bit grayscale");
}

TEST(Image, ForeignMissingAndBrokenFilesAreRefused) {
  const std::string dir = test::temp_dir("img_bad");
  const std::string txt = dir + "/notes.jpg";
  test::write_file(txt, "this is a text file, not a JPEG\n");
  expect_error<FormatError>([&] { decode_image(txt); }, txt, "not a JPEG or PNG");
  const std::string empty = dir + "/empty.png";
  test::write_file(empty, "");
  expect_error<FormatError>([&] { decode_image(empty); }, empty, "not a JPEG or PNG");
  const std::string missing = dir + "/missing.jpg";
  expect_error<IoError>([&] { decode_image(missing); }, missing, "missing.jpg");

  // PNG cut in the middle of IDAT, and one with a flipped IDAT byte (CRC mismatch).
  PngSpec s{64, 64, PNG_COLOR_TYPE_RGB, 8};
  for (int i = 0; i < 64 * 64 * 3; ++i) s.data.push_back(uint8_t((i * 7919) >> 3));
  const std::string good = dir + "/good.png";
  write_png(good, s);
  ASSERT_NO_THROW(decode_image(good));
  const std::string bytes = test::read_file(good);
  const std::string cut = dir + "/cut.png";
  test::write_file(cut, bytes.substr(0, bytes.size() / 2));
  expect_error<FormatError>([&] { decode_image(cut); }, cut, "truncated");
  std::string flipped = bytes;
  const size_t idat = flipped.find("IDAT");
  ASSERT_NE(idat, std::string::npos);
  flipped[idat + 40] = char(flipped[idat + 40] ^ 0x5a);
  const std::string crc = dir + "/crc.png";
  test::write_file(crc, flipped);
  expect_error<FormatError>([&] { decode_image(crc); }, crc, "corrupt PNG");
}

TEST(Image, BrokenJpegsAreRefused) {
  LOWBIT_REQUIRE_SHARED(ironing, "data/images/extreme_ironing.jpg");
  const std::string dir = test::temp_dir("jpg_bad");
  const std::string bytes = test::read_file(ironing);

  // Truncated in the entropy-coded data: libjpeg would pad with grey after a warning.
  const std::string half = dir + "/half.jpg";
  test::write_file(half, bytes.substr(0, bytes.size() / 2));
  expect_error<FormatError>([&] { decode_image(half); }, half, "truncated");
  // Truncated inside the headers: a fatal libjpeg error through the longjmp path.
  const std::string head = dir + "/head.jpg";
  test::write_file(head, bytes.substr(0, 40));
  expect_error<FormatError>([&] { decode_image(head); }, head, "corrupt JPEG");
  // A bogus SOF segment length.
  std::string bad = bytes;
  const size_t sof = bad.find("\xff\xc0", 2);
  ASSERT_NE(sof, std::string::npos);
  bad[sof + 2] = 0;
  bad[sof + 3] = 3;
  const std::string bad_sof = dir + "/bad_sof.jpg";
  test::write_file(bad_sof, bad);
  expect_error<FormatError>([&] { decode_image(bad_sof); }, bad_sof, "corrupt JPEG");
  // Entropy data overwritten by a marker in the middle of the scan.
  std::string marked = bytes;
  const size_t mid = marked.size() / 2;
  for (size_t i = 0; i < 64; i += 2) {
    marked[mid + i] = char(0xff);
    marked[mid + i + 1] = char(0xd0 + (i / 2) % 8);
  }
  const std::string rst = dir + "/markers.jpg";
  test::write_file(rst, marked);
  expect_error<FormatError>([&] { decode_image(rst); }, rst, "corrupt");
}

// Headers claiming too many pixels are refused before the pixel buffer is allocated: a
// 60000 x 60000 JPEG header (3.6 G pixels; decoding would need 10.8 GB) and a 100000 x 100000
// PNG with no image data at all (only a header check can refuse it with the budget message).
TEST(Image, PixelBudgetIsCheckedBeforeDecoding) {
  LOWBIT_REQUIRE_SHARED(ironing, "data/images/extreme_ironing.jpg");
  const std::string dir = test::temp_dir("img_budget");
  const std::string bytes = test::read_file(ironing);
  std::string big = bytes;
  const size_t sof = big.find("\xff\xc0", 2);
  ASSERT_NE(sof, std::string::npos);
  // SOF0: FF C0, length(2), precision(1), height(2), width(2).
  big[sof + 5] = char(60000 >> 8);
  big[sof + 6] = char(60000 & 0xff);
  big[sof + 7] = char(60000 >> 8);
  big[sof + 8] = char(60000 & 0xff);
  const std::string bomb = dir + "/bomb.jpg";
  test::write_file(bomb, big);
  expect_error<FormatError>([&] { decode_image(bomb); }, bomb, "pixel budget");

  PngSpec s{100000, 100000, PNG_COLOR_TYPE_RGB, 8};
  s.header_only = true;
  const std::string png_bomb = dir + "/bomb.png";
  write_png(png_bomb, s);
  expect_error<FormatError>([&] { decode_image(png_bomb); }, png_bomb, "pixel budget");

  // The budget is a parameter: the real photo (216600 pixels) under a smaller one.
  expect_error<FormatError>([&] { decode_image(ironing, 200000); }, ironing, "pixel budget");
  EXPECT_NO_THROW(decode_image(ironing, 570 * 380));
}
