// JPEG/PNG decoding into RGB uint8 (see image.h for the PIL conventions followed).
//
// Error handling: libjpeg and libpng report fatal errors by calling a handler that must not
// return. Ours copies the message into the decoder state and longjmps back to a setjmp placed in
// a small helper whose frame holds no C++ object (so nothing is skipped that needed destroying);
// the helper returns false, and the C++ caller — whose RAII guard owns the decoder state — throws
// FormatError naming the file. Buffers are std::vectors owned by the caller, allocated only after
// the header passed the pixel budget.
#include "io/image.h"

// jpeglib.h needs FILE and size_t declared first.
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <memory>

#include <jerror.h>
#include <jpeglib.h>
#include <png.h>

#include "core/error.h"
#include "io/files.h"

namespace lowbit {

ImageFormat sniff_image_format(const uint8_t* data, size_t size) {
  static const uint8_t kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (size >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff) return ImageFormat::Jpeg;
  if (size >= 8 && std::memcmp(data, kPng, 8) == 0) return ImageFormat::Png;
  return ImageFormat::Unknown;
}

namespace {

void check_budget(int64_t width, int64_t height, int64_t max_pixels, const std::string& source) {
  LOWBIT_CHECK(width > 0 && height > 0, FormatError, "{}: image has an empty size {}x{}", source,
               width, height);
  LOWBIT_CHECK(width * height <= max_pixels, FormatError,
               "{}: image is {}x{} = {} pixels, more than the pixel budget of {} (refused before "
               "decoding)",
               source, width, height, width * height, max_pixels);
}

// Gray bytes in the first width*height bytes of `img.pixels` -> RGB, in place from the end.
void replicate_gray_in_place(Image& img) {
  const int64_t n = img.width * img.height;
  uint8_t* p = img.pixels.data();
  for (int64_t i = n - 1; i >= 0; --i) {
    const uint8_t g = p[i];
    p[3 * i + 0] = g;
    p[3 * i + 1] = g;
    p[3 * i + 2] = g;
  }
}

// ---------------------------------------------------------------------------------- JPEG

struct JpegState {
  jpeg_decompress_struct cinfo;
  jpeg_error_mgr err;
  std::jmp_buf jump;
  bool created = false;
  char message[JMSG_LENGTH_MAX] = {};
  int corrupt_code = 0;  // first corrupt-data warning, 0 if none
  char corrupt_message[JMSG_LENGTH_MAX] = {};
};

void jpeg_fatal(j_common_ptr cinfo) {
  auto* s = static_cast<JpegState*>(cinfo->client_data);
  (*cinfo->err->format_message)(cinfo, s->message);
  std::longjmp(s->jump, 1);
}

// Warnings (level -1) that mean the data is damaged: after them libjpeg goes on with grey or
// garbage blocks. Other warnings (extraneous bytes between markers, odd JFIF versions, ...)
// leave the pixels intact and are ignored, as PIL ignores them. Trace messages are dropped.
void jpeg_message(j_common_ptr cinfo, int level) {
  if (level >= 0) return;
  auto* s = static_cast<JpegState*>(cinfo->client_data);
  const int code = cinfo->err->msg_code;
  const bool corrupt = code == JWRN_JPEG_EOF || code == JWRN_HIT_MARKER || code == JWRN_HUFF_BAD_CODE ||
                       code == JWRN_MUST_RESYNC || code == JWRN_NOT_SEQUENTIAL;
  if (corrupt && s->corrupt_code == 0) {
    s->corrupt_code = code;
    (*cinfo->err->format_message)(cinfo, s->corrupt_message);
  }
  cinfo->err->num_warnings++;
}

// C-only helpers: the setjmp frames. Each returns false after a libjpeg error.
bool jpeg_header_step(JpegState* s, const uint8_t* data, size_t size) {
  if (setjmp(s->jump)) return false;
  jpeg_create_decompress(&s->cinfo);
  s->created = true;
  s->cinfo.client_data = s;
  jpeg_mem_src(&s->cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&s->cinfo, TRUE);
  return true;
}

bool jpeg_decode_step(JpegState* s, uint8_t* out, size_t stride) {
  if (setjmp(s->jump)) return false;
  jpeg_start_decompress(&s->cinfo);
  while (s->cinfo.output_scanline < s->cinfo.output_height) {
    JSAMPROW row = out + size_t(s->cinfo.output_scanline) * stride;
    jpeg_read_scanlines(&s->cinfo, &row, 1);
  }
  jpeg_finish_decompress(&s->cinfo);
  return true;
}

Image decode_jpeg(const uint8_t* data, size_t size, const std::string& source, int64_t max_pixels) {
  auto s = std::make_unique<JpegState>();
  s->cinfo.err = jpeg_std_error(&s->err);
  s->err.error_exit = jpeg_fatal;
  s->err.emit_message = jpeg_message;
  s->cinfo.client_data = s.get();
  struct Guard {
    JpegState* s;
    ~Guard() {
      if (s->created) jpeg_destroy_decompress(&s->cinfo);
    }
  } guard{s.get()};

  LOWBIT_CHECK(jpeg_header_step(s.get(), data, size), FormatError, "{}: corrupt JPEG: {}", source,
               s->message);
  jpeg_decompress_struct& ci = s->cinfo;
  const bool gray = ci.jpeg_color_space == JCS_GRAYSCALE;
  LOWBIT_CHECK(gray || ci.jpeg_color_space == JCS_YCbCr || ci.jpeg_color_space == JCS_RGB, FormatError,
               "{}: unsupported JPEG colour space (CMYK/YCCK or unknown, {} components)", source,
               ci.num_components);
  check_budget(ci.image_width, ci.image_height, max_pixels, source);
  // libjpeg's defaults are PIL's: JDCT_ISLOW, do_fancy_upsampling = TRUE, scale 1/1.
  ci.out_color_space = gray ? JCS_GRAYSCALE : JCS_RGB;

  Image img;
  img.width = ci.image_width;
  img.height = ci.image_height;
  img.pixels.resize(size_t(img.width * img.height * 3));
  const size_t stride = size_t(img.width) * (gray ? 1 : 3);
  LOWBIT_CHECK(jpeg_decode_step(s.get(), img.pixels.data(), stride), FormatError,
               "{}: corrupt JPEG: {}", source, s->message);
  LOWBIT_CHECK(s->corrupt_code == 0, FormatError, "{}: corrupt or truncated JPEG: {}", source,
               s->corrupt_message);
  LOWBIT_ASSERT(int64_t(ci.output_width) == img.width && int64_t(ci.output_height) == img.height);
  if (gray) replicate_gray_in_place(img);
  return img;
}

// ---------------------------------------------------------------------------------- PNG

struct PngState {
  png_structp png = nullptr;
  png_infop info = nullptr;
  const uint8_t* data = nullptr;
  size_t size = 0, pos = 0;
  char message[256] = {};
};

void png_fatal(png_structp png, png_const_charp msg) {
  auto* s = static_cast<PngState*>(png_get_error_ptr(png));
  std::snprintf(s->message, sizeof(s->message), "%s", msg);
  png_longjmp(png, 1);
}
void png_warning_ignored(png_structp, png_const_charp) {}

void png_read_memory(png_structp png, png_bytep out, png_size_t n) {
  auto* s = static_cast<PngState*>(png_get_io_ptr(png));
  if (n > s->size - s->pos) png_error(png, "unexpected end of file (truncated PNG)");
  std::memcpy(out, s->data + s->pos, n);
  s->pos += n;
}

bool png_header_step(PngState* s) {
  if (setjmp(png_jmpbuf(s->png))) return false;
  png_read_info(s->png, s->info);
  return true;
}

bool png_update_step(PngState* s) {
  if (setjmp(png_jmpbuf(s->png))) return false;
  png_read_update_info(s->png, s->info);
  return true;
}

bool png_decode_step(PngState* s, png_bytepp rows) {
  if (setjmp(png_jmpbuf(s->png))) return false;
  png_read_image(s->png, rows);
  return true;
}

Image decode_png(const uint8_t* data, size_t size, const std::string& source, int64_t max_pixels) {
  auto s = std::make_unique<PngState>();
  s->data = data;
  s->size = size;
  struct Guard {
    PngState* s;
    ~Guard() {
      if (s->png) png_destroy_read_struct(&s->png, s->info ? &s->info : nullptr, nullptr);
    }
  } guard{s.get()};
  s->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, s.get(), png_fatal, png_warning_ignored);
  LOWBIT_CHECK(s->png, FormatError, "{}: cannot create a PNG decoder", source);
  s->info = png_create_info_struct(s->png);
  LOWBIT_CHECK(s->info, FormatError, "{}: cannot create a PNG decoder", source);
  png_set_read_fn(s->png, s.get(), png_read_memory);
  // libpng's own default limit (1e6 rows/columns) would refuse first with a vaguer message; the
  // pixel budget below is the limit that matters.
  png_set_user_limits(s->png, 0x7fffffff, 0x7fffffff);

  LOWBIT_CHECK(png_header_step(s.get()), FormatError, "{}: corrupt PNG: {}", source, s->message);
  const int64_t width = png_get_image_width(s->png, s->info);
  const int64_t height = png_get_image_height(s->png, s->info);
  const int color_type = png_get_color_type(s->png, s->info);
  const int bit_depth = png_get_bit_depth(s->png, s->info);
  check_budget(width, height, max_pixels, source);
  LOWBIT_CHECK(!(color_type == PNG_COLOR_TYPE_GRAY && bit_depth == 16), FormatError,
               "{}: 16-bit grayscale PNG is not supported (PIL opens it as mode I;16, whose "
               "convert('RGB') clips rather than scales)",
               source);

  if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(s->png);  // may add alpha (tRNS)
  if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(s->png);
  if (bit_depth == 16) png_set_strip_16(s->png);  // keeps the high byte, like PIL's ";16B" modes
  png_set_interlace_handling(s->png);
  LOWBIT_CHECK(png_update_step(s.get()), FormatError, "{}: corrupt PNG: {}", source, s->message);
  const int channels = png_get_channels(s->png, s->info);
  const size_t rowbytes = png_get_rowbytes(s->png, s->info);
  LOWBIT_ASSERT(channels >= 1 && channels <= 4 && png_get_bit_depth(s->png, s->info) == 8 &&
                rowbytes == size_t(width) * size_t(channels));

  std::vector<uint8_t> raw(rowbytes * size_t(height));
  std::vector<png_bytep> rows(static_cast<size_t>(height));
  for (int64_t y = 0; y < height; ++y) rows[size_t(y)] = raw.data() + size_t(y) * rowbytes;
  LOWBIT_CHECK(png_decode_step(s.get(), rows.data()), FormatError, "{}: corrupt PNG: {}", source,
               s->message);

  // 1 = gray, 2 = gray + alpha, 3 = RGB, 4 = RGBA: replicate gray, drop alpha.
  Image img;
  img.width = width;
  img.height = height;
  img.pixels.resize(size_t(width * height * 3));
  const int64_t n = width * height;
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* src = raw.data() + i * channels;
    uint8_t* dst = img.pixels.data() + i * 3;
    if (channels <= 2) {
      dst[0] = dst[1] = dst[2] = src[0];
    } else {
      dst[0] = src[0];
      dst[1] = src[1];
      dst[2] = src[2];
    }
  }
  return img;
}

}  // namespace

Image decode_image_bytes(const uint8_t* data, size_t size, const std::string& source, int64_t max_pixels) {
  LOWBIT_CHECK(max_pixels > 0, ArgError, "pixel budget must be positive, got {}", max_pixels);
  switch (sniff_image_format(data, size)) {
    case ImageFormat::Jpeg: return decode_jpeg(data, size, source, max_pixels);
    case ImageFormat::Png: return decode_png(data, size, source, max_pixels);
    case ImageFormat::Unknown: break;
  }
  throw FormatError(fmt::format("{}: not a JPEG or PNG image (no JPEG/PNG signature in its first bytes)",
                                source));
}

Image decode_image(const std::string& path, int64_t max_pixels) {
  const std::string bytes = read_text_file(path);  // binary-safe; IoError naming the path
  return decode_image_bytes(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), path,
                            max_pixels);
}

}  // namespace lowbit
