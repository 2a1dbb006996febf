// Image decoding: JPEG (baseline and progressive) and PNG into RGB uint8 [H, W, 3], the way
// PIL's `Image.open(f).convert("RGB")` does, so that the processors downstream see the same
// pixels transformers sees.
//
// Decoders: libjpeg-turbo (Debian's libjpeg62-turbo, the library PIL itself links) with its
// defaults as PIL uses them (islow integer IDCT, fancy upsampling, YCbCr->RGB in the library),
// and libpng. Conversion to RGB follows PIL's convert("RGB"): grayscale is replicated into the
// three channels, a palette is looked up (its transparency ignored), alpha is dropped — not
// composited onto any background. Sub-byte grayscale (1/2/4-bit) is scaled to 0..255 like PIL's
// "L;2"/"L;4" unpackers (x*85, x*17; 1-bit: 0/255). 16-bit RGB, RGBA and gray+alpha PNGs keep
// the high byte of each sample, as PIL's "RGB;16B"/"RGBA;16B"/"LA;16B" raw modes do; 16-bit
// grayscale without alpha is refused (PIL opens it as mode "I;16", whose convert("RGB") clips
// instead of scaling — not worth imitating). CMYK/YCCK JPEGs are refused.
//
// Untrusted input: the format is found from the magic bytes (never the file name); the header's
// width x height is checked against a pixel budget before the pixel buffer (or libjpeg's
// progressive coefficient buffers) is allocated; libjpeg's and libpng's fatal errors come back
// through setjmp/longjmp inside small C-only helpers and become FormatError after the decoder
// state is destroyed; a truncated JPEG (libjpeg's "premature end of data" warning, after which it
// would pad with grey) and libjpeg's corrupt-entropy-data warnings are errors too.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace lowbit {

// RGB, row-major, 3 bytes per pixel: pixels[(y * width + x) * 3 + c].
struct Image {
  int64_t width = 0, height = 0;
  std::vector<uint8_t> pixels;

  uint8_t* at(int64_t y, int64_t x) { return pixels.data() + (y * width + x) * 3; }
  const uint8_t* at(int64_t y, int64_t x) const { return pixels.data() + (y * width + x) * 3; }
};

// Images whose header claims more pixels than this are refused before decoding
// (PIL warns at ~89 M pixels and refuses at twice that; 50 M covers any camera photo).
inline constexpr int64_t kDefaultMaxImagePixels = 50'000'000;

enum class ImageFormat { Unknown, Jpeg, Png };
// From the first bytes: JPEG starts FF D8 FF, PNG with its 8-byte signature.
ImageFormat sniff_image_format(const uint8_t* data, size_t size);

// Reads and decodes `path`. IoError when it cannot be read; FormatError naming the path when it is
// not a JPEG/PNG, is corrupt or truncated, has an unsupported variant, or exceeds max_pixels.
Image decode_image(const std::string& path, int64_t max_pixels = kDefaultMaxImagePixels);
// The same for bytes in memory; `source` names them in error messages.
Image decode_image_bytes(const uint8_t* data, size_t size, const std::string& source,
                         int64_t max_pixels = kDefaultMaxImagePixels);

}  // namespace lowbit
