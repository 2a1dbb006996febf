// Quantization of vision-language models tower by tower (quant/vlm_quant.h), on the three tiny
// VLMs of ../shared: rotation invariance of the whole VLM, per-tower weight widths, the skip-last
// flags tensor by tensor in the checkpoint, in-memory == reloaded, the --wbits field count.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>

#include <nlohmann/json.hpp>

#include "io/image.h"
#include "io/safetensors.h"
#include "io/tokenizer.h"
#include "models/templates.h"
#include "models/vlm.h"
#include "quant/checkpoint.h"
#include "quant/vlm_quant.h"
#include "testing.h"

namespace lowbit {
namespace {

namespace fs = std::filesystem;
using test::normalized_error;

const char* const kModels[] = {"models/tiny-llava-1.5", "models/tiny-llava-next", "models/tiny-smolvlm"};

// The decoder's input x [T, d] (image features in the image tokens) and the logits [T, vocab]
// for one photo and a fixed question, with the model's own template.
struct Probe {
  std::vector<int32_t> ids;
  std::vector<float> x, logits;
};

Probe probe(Vlm& v, const std::string& dir, const Tokenizer& tok, const std::string& photo) {
  Probe p;
  v.set_images({decode_image(photo)});
  const std::string text =
      render_prompt(resolve_template("auto", dir), "What is shown here?", 1, template_context(dir));
  p.ids = v.prompt_ids(tok, text);
  p.x = v.embed(p.ids);
  const Tensor lg = v.language().forward_embeds(p.x.data(), int64_t(p.ids.size()));
  p.logits.assign(lg.f32(), lg.f32() + lg.numel());
  return p;
}

// Rows of x at the image tokens (the projector's output), concatenated.
std::vector<float> image_rows(const Probe& p, int32_t image_token, int64_t d) {
  std::vector<float> r;
  for (size_t t = 0; t < p.ids.size(); ++t)
    if (p.ids[t] == image_token) r.insert(r.end(), p.x.begin() + int64_t(t) * d, p.x.begin() + int64_t(t + 1) * d);
  return r;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

// A conversation JSON in llava_v1_5_mix665k.json's shape over the two photos of ../shared.
std::string write_conversations(const std::string& dir) {
  const nlohmann::json rows = nlohmann::json::array({
      {{"id", "a1"},
       {"image", "coco/train2017/extreme_ironing.jpg"},  // found by basename, as AutoRound's loader does
       {"conversations",
        {{{"from", "human"}, {"value", "<image>\nWhat is unusual about this image?"}},
         {{"from", "gpt"}, {"value", "A man irons clothes on the back of a moving taxi."}},
         {{"from", "human"}, {"value", "Is it safe?"}},
         {{"from", "gpt"}, {"value", "No."}}}}},
      {{"id", "a2"},
       {"image", "waterview.jpg"},
       {"conversations",
        {{{"from", "human"}, {"value", "Describe the scene.\n<image>"}},
         {{"from", "gpt"}, {"value", "A wooden pier leads into a calm lake below mountains."}}}}},
      {{"id", "t1"}, {"conversations", {{{"from", "human"}, {"value", "text only"}}, {{"from", "gpt"}, {"value", "x"}}}}},
  });
  const std::string path = dir + "/conv.json";
  test::write_file(path, rows.dump(1));
  return path;
}

struct Loaded {
  std::string dir;
  std::unique_ptr<Vlm> vlm;
  std::unique_ptr<Tokenizer> tok;
};
Loaded load(const std::string& dir) {
  Loaded l;
  l.dir = dir;
  l.vlm = load_vlm(dir);
  l.tok = load_tokenizer(dir);
  return l;
}

// 16-bit QuaRot of the language model inside the VLM (R1 folded into the projector's last linear
// and, for LLaVA-NeXT, image_newline; R2/R4 and the online Hadamards as for LLaMA) leaves the
// logits of an image prompt unchanged up to f32 rounding.
TEST(VlmQuant, Rotation16BitKeepsImageLogits) {
  LOWBIT_REQUIRE_SHARED(photo, "data/images/extreme_ironing.jpg");
  for (const char* rel : kModels) {
    LOWBIT_REQUIRE_SHARED(dir, rel);
    Loaded m = load(dir);
    const Probe ref = probe(*m.vlm, dir, *m.tok, photo);
    QuantConfig c;
    c.rotate = true;
    quantize_vlm(*m.vlm, c, *m.tok, {});
    const Probe rot = probe(*m.vlm, dir, *m.tok, photo);
    ASSERT_EQ(rot.ids, ref.ids);
    const double e = normalized_error(rot.logits, ref.logits);
    EXPECT_LT(e, 2e-5) << rel;
    // The image features did change (they are in the rotated basis now): the test can fail.
    EXPECT_GT(normalized_error(rot.x, ref.x), 1e-2) << rel;
    std::printf("%s: 16-bit rotation, normalized logit change %.3g\n", rel, e);
  }
}

// --wbits 16,16,4: vision features bit-identical, the language model changed; 4,4,16 the reverse
// (the decoder's weights untouched: the same input gives the same logits, bit for bit).
TEST(VlmQuant, PerTowerWidths) {
  LOWBIT_REQUIRE_SHARED(photo, "data/images/waterview.jpg");
  for (const char* rel : kModels) {
    LOWBIT_REQUIRE_SHARED(dir, rel);
    Loaded ref = load(dir);
    const Probe p0 = probe(*ref.vlm, dir, *ref.tok, photo);
    const VlmParts P = ref.vlm->parts();
    const int64_t d = P.language->cfg.hidden_size;
    {
      Loaded m = load(dir);
      QuantConfig c;
      c.w_bits = 4;
      c.w_bits_vision = c.w_bits_projector = 16;
      c.w_rtn = true;
      quantize_vlm(*m.vlm, c, *m.tok, {});
      const Probe p = probe(*m.vlm, dir, *m.tok, photo);
      EXPECT_EQ(image_rows(p, P.image_token_id, d), image_rows(p0, P.image_token_id, d)) << rel;
      EXPECT_GT(normalized_error(p.logits, p0.logits), 1e-3) << rel;
    }
    {
      Loaded m = load(dir);
      QuantConfig c;
      c.w_bits = 16;
      c.w_bits_vision = c.w_bits_projector = 4;
      c.w_rtn = true;
      quantize_vlm(*m.vlm, c, *m.tok, {});
      const Probe p = probe(*m.vlm, dir, *m.tok, photo);
      EXPECT_GT(normalized_error(image_rows(p, P.image_token_id, d), image_rows(p0, P.image_token_id, d)), 1e-3) << rel;
      const Tensor lg = m.vlm->language().forward_embeds(p0.x.data(), int64_t(p0.ids.size()));
      EXPECT_EQ(std::vector<float>(lg.f32(), lg.f32() + lg.numel()), p0.logits) << rel;
    }
  }
}

// --a_bits quantizes the decoder's activations; the vision tower's and projector's only with
// --vit_module (QSVD), at min(--a_clip_ratio, --vita_clip_ratio).
TEST(VlmQuant, VitModuleActivations) {
  LOWBIT_REQUIRE_SHARED(photo, "data/images/waterview.jpg");
  for (const char* rel : kModels) {
    LOWBIT_REQUIRE_SHARED(dir, rel);
    Loaded m = load(dir);
    const VlmParts P = m.vlm->parts();
    const int64_t d = P.language->cfg.hidden_size;
    const Probe p0 = probe(*m.vlm, dir, *m.tok, photo);
    QuantConfig c;
    c.a_bits = 4;
    quantize_vlm(*m.vlm, c, *m.tok, {});
    const Probe lm_only = probe(*m.vlm, dir, *m.tok, photo);
    EXPECT_EQ(image_rows(lm_only, P.image_token_id, d), image_rows(p0, P.image_token_id, d)) << rel;
    EXPECT_GT(normalized_error(lm_only.logits, p0.logits), 1e-3) << rel;
    EXPECT_FALSE(P.vision->layers[0].fc1.aq.on());
    Loaded v = load(dir);
    c.vit_module = true;
    c.a_clip_ratio = 0.95;
    c.vita_clip_ratio = 0.8;
    quantize_vlm(*v.vlm, c, *v.tok, {});
    const Probe vit = probe(*v.vlm, dir, *v.tok, photo);
    EXPECT_GT(normalized_error(image_rows(vit, P.image_token_id, d), image_rows(p0, P.image_token_id, d)), 1e-3) << rel;
    const VlmParts Q = v.vlm->parts();
    EXPECT_EQ(Q.vision->layers[0].fc1.aq.bits, 4);
    EXPECT_FLOAT_EQ(Q.vision->layers[0].fc1.aq.clip, 0.8f);
    EXPECT_FLOAT_EQ(Q.projector_out->aq.clip, 0.8f);
    EXPECT_FLOAT_EQ(Q.language->layers[0].q_proj.aq.clip, 0.95f);
  }
}

// --a_auto_asym on a VLM: the seed's rule decides every tower's linears (vision and projector
// under --vit_module) from one multimodal sample; the decisions reach the quantizers and the
// checkpoint (reloaded logits equal). lowbit's rule decides per shared input.
TEST(VlmQuant, AutoAsymEveryTower) {
  LOWBIT_REQUIRE_SHARED(photo, "data/images/extreme_ironing.jpg");
  LOWBIT_REQUIRE_SHARED(dir, "models/tiny-llava-1.5");
  const std::string tmp = test::temp_dir("vlmq_asym");
  for (const char* rule : {"seed", "lowbit"}) {
    Loaded m = load(dir);
    QuantConfig c;
    c.w_bits = 4;
    c.w_rtn = true;
    c.a_bits = 4;
    c.vit_module = true;
    c.a_auto_asym = true;
    c.auto_asym_rule = rule;
    c.auto_asym_t2 = 0.5;
    c.cal_dataset = write_conversations(tmp);
    c.cal_image_folder = fs::path(photo).parent_path().string();
    c.nsamples = 2;
    const VlmCalibration cal = load_vlm_calibration(c, *m.tok, dir, 2048);
    const QuantizedModel q = quantize_vlm(*m.vlm, c, *m.tok, cal);
    const VlmParts P = m.vlm->parts();
    const nlohmann::json& d = q.report["auto_asym"];
    const Linear& fc1 = P.vision->layers[0].fc1;
    ASSERT_TRUE(d.contains(fc1.name)) << rule;
    EXPECT_TRUE(d.contains(P.projector_out->name)) << rule;
    EXPECT_TRUE(d.contains("model.layers.0.mlp.down_proj")) << rule;
    EXPECT_EQ(fc1.aq.asym, d[fc1.name]["asym"].get<bool>()) << rule;
    EXPECT_EQ(P.projector_out->aq.asym, d[P.projector_out->name]["asym"].get<bool>()) << rule;
    int n_asym = 0, n = 0;
    for (auto& [k, v] : d.items()) n_asym += v["asym"].get<bool>(), ++n;
    EXPECT_GT(n_asym, 0) << rule;  // both outcomes occur: the decisions are real
    EXPECT_LT(n_asym, n) << rule;
    // RTN given calibration data measures every quantized layer's error, grouped by tower.
    for (const char* t : {"vision", "projector", "language"}) {
      const nlohmann::json& layers = q.report["towers"][t]["layers"];
      ASSERT_EQ(layers.size(), std::string(t) == "projector" ? 1u : 2u) << rule << " " << t;
      for (const auto& l : layers) EXPECT_GT(l["rel_error"].get<double>(), 0.0) << rule << " " << t;
    }
    const std::string out = tmp + "/q_" + rule;
    save_quantized_vlm(*m.vlm, q, dir, out);
    const Probe a = probe(*m.vlm, dir, *m.tok, photo);
    std::unique_ptr<Vlm> r = load_vlm(out);
    EXPECT_EQ(probe(*r, out, *m.tok, photo).logits, a.logits) << rule;
  }
}

// GPTQ on every tower from a conversation JSON (+ image folder), GPTAQ and vision activation
// quantization, with all skip-last flags: in the checkpoint exactly the named linears are stored
// as the source's tensors (bit for bit), every other linear of a used layer as packed codes; the
// reloaded checkpoint gives the in-memory model's logits; the report groups errors by tower.
TEST(VlmQuant, SkipLastCheckpointAndReload) {
  LOWBIT_REQUIRE_SHARED(photo, "data/images/extreme_ironing.jpg");
  const std::string images = fs::path(photo).parent_path().string();
  for (const char* rel : kModels) {
    LOWBIT_REQUIRE_SHARED(dir, rel);
    const std::string tmp = test::temp_dir("vlmq");
    Loaded m = load(dir);
    QuantConfig c;
    c.w_bits = c.lm_head_w_bits = 4;
    c.w_bits_vision = c.w_bits_projector = 4;
    c.use_v2 = true;
    c.vit_module = true;
    c.a_bits = 8;
    c.vita_clip_ratio = 0.9;
    c.skip_last_vision = c.skip_last_proj = c.skip_last_language = true;
    c.cal_dataset = write_conversations(tmp);
    c.cal_image_folder = images;
    c.nsamples = 2;
    c.cal_seqlen = 4096;
    const VlmCalibration cal = load_vlm_calibration(c, *m.tok, dir, m.vlm->language().cfg.max_position);
    ASSERT_EQ(cal.multimodal.size(), 2u);
    const QuantizedModel q = quantize_vlm(*m.vlm, c, *m.tok, cal);
    const std::string out = tmp + "/q";
    save_quantized_vlm(*m.vlm, q, dir, out);

    // Report: per-tower settings and every quantized layer's relative error.
    const nlohmann::json& towers = q.report["towers"];
    for (const char* t : {"vision", "projector", "language"}) {
      ASSERT_TRUE(towers.contains(t)) << rel;
      EXPECT_EQ(towers[t]["method"], "gptaq");
      ASSERT_FALSE(towers[t]["layers"].empty()) << rel << " " << t;
      for (const auto& l : towers[t]["layers"]) EXPECT_TRUE(l.contains("rel_error")) << rel << " " << t;
    }
    EXPECT_EQ(towers["language"]["lm_head_w_bits"], 16);

    // Tensor by tensor.
    const VlmParts P = m.vlm->parts();
    std::set<std::string> kept = {P.vision->layers[size_t(P.vision_layers - 1)].fc2.name, P.projector_out->name,
                                  P.head_root + "lm_head"};
    std::set<std::string> expect_packed;
    for (int64_t l = 0; l < P.vision_layers; ++l)
      for (const Linear* lin : P.vision->layers[size_t(l)].linears())
        if (!kept.count(lin->name)) expect_packed.insert(lin->name);
    for (const Linear* lin : P.projector->linears())
      if (!kept.count(lin->name)) expect_packed.insert(lin->name);
    for (const auto& L : P.language->layers)
      for (const Linear* lin : L.linears()) expect_packed.insert(P.language_root + lin->name.substr(6));  // "model."
    const WeightStore src = WeightStore::open_dir(dir), dst = WeightStore::open_dir(out);
    for (const std::string& k : kept) {
      if (!src.has(k + ".weight")) {  // SmolVLM's lm_head is tied to the embeddings: stays tied
        EXPECT_FALSE(dst.has(k + ".weight") || dst.has(k + ".qweight")) << rel << " " << k;
        continue;
      }
      ASSERT_TRUE(dst.has(k + ".weight")) << rel << " " << k;
      EXPECT_FALSE(dst.has(k + ".qweight")) << rel << " " << k;
      EXPECT_TRUE(same_bytes(dst.get(k + ".weight"), src.get(k + ".weight"))) << rel << " " << k;
    }
    int n_packed = 0;
    for (const std::string& name : dst.names()) {
      if (name.size() > 8 && name.substr(name.size() - 8) == ".qweight") {
        const std::string lin = name.substr(0, name.size() - 8);
        EXPECT_TRUE(expect_packed.count(lin)) << rel << ": unexpected packed " << lin;
        ++n_packed;
      }
    }
    EXPECT_EQ(n_packed, int(expect_packed.size())) << rel;

    // Reloaded == in memory (logits with an image).
    const Probe a = probe(*m.vlm, dir, *m.tok, photo);
    std::unique_ptr<Vlm> r = load_vlm(out);
    const Probe b = probe(*r, out, *m.tok, photo);
    ASSERT_EQ(a.ids, b.ids);
    EXPECT_EQ(a.logits, b.logits) << rel;
    const nlohmann::json meta = nlohmann::json::parse(test::read_file(out + "/lowbit_quant.json"));
    EXPECT_EQ(meta["towers"]["vision"]["w_bits"], 4);
    EXPECT_EQ(meta["quant_config"]["vlm"]["skip_last_proj"], true);
  }
}

// A rotated, RTN-quantized checkpoint (lm_head untied and quantized at L = 4 by --wbits V,P,L)
// reloads to the in-memory logits; with SmolVLM's tied embeddings this checks the untying.
TEST(VlmQuant, RotatedRtnCheckpointReloads) {
  LOWBIT_REQUIRE_SHARED(photo, "data/images/waterview.jpg");
  for (const char* rel : kModels) {
    LOWBIT_REQUIRE_SHARED(dir, rel);
    const std::string tmp = test::temp_dir("vlmq_rot");
    Loaded m = load(dir);
    QuantConfig c;
    c.rotate = true;
    c.w_rtn = true;
    c.w_bits = c.lm_head_w_bits = 4;
    c.w_bits_vision = 8;
    c.w_bits_projector = 6;
    c.quant_patch_embed = true;
    c.a_bits = 8;
    c.lma_clip_ratio = 0.9;
    c.k_bits = c.v_bits = 8;
    c.k_asym = true;
    const QuantizedModel q = quantize_vlm(*m.vlm, c, *m.tok, {});
    save_quantized_vlm(*m.vlm, q, dir, tmp + "/q");
    const Probe a = probe(*m.vlm, dir, *m.tok, photo);
    std::unique_ptr<Vlm> r = load_vlm(tmp + "/q");
    const Probe b = probe(*r, tmp + "/q", *m.tok, photo);
    EXPECT_EQ(a.logits, b.logits) << rel;
    EXPECT_TRUE(WeightStore::open_dir(tmp + "/q").has(m.vlm->parts().vision->patch_embed.name + ".qweight")) << rel;
    EXPECT_EQ(q.report["towers"]["vision"]["patch_embed_method"], "rtn") << rel;
  }
}

// ‖X Ŵᵀ − X Wᵀ‖ / ‖X Wᵀ‖ in double: X [N, K] patch rows, W and Ŵ [d, K] (the conv bias cancels).
double conv_error(const std::vector<double>& X, int64_t K, const std::vector<float>& W, const std::vector<float>& Wq) {
  const int64_t N = int64_t(X.size()) / K, d = int64_t(W.size()) / K;
  double num = 0, den = 0;
  for (int64_t i = 0; i < N; ++i)
    for (int64_t o = 0; o < d; ++o) {
      double y = 0, yq = 0;
      for (int64_t k = 0; k < K; ++k) {
        y += X[size_t(i * K + k)] * double(W[size_t(o * K + k)]);
        yq += X[size_t(i * K + k)] * double(Wq[size_t(o * K + k)]);
      }
      num += (yq - y) * (yq - y);
      den += y * y;
    }
  return std::sqrt(num / den);
}

// Under GPTQ (and GPTAQ) --quant_patch_embed solves the conv with GPTQ on the calibration images'
// unfolded patches: its codes differ from RTN's at the same width and its output error on those
// patches is at most RTN's (GPTQ's property on its own calibration data). The patches are built
// here from the processor's pixel values (the "pixels" tower hook) by the conv's definition
// (stride = kernel = p: row (gy, gx), column (c, ky, kx)). The checkpoint reloads bit for bit and
// records the method.
TEST(VlmQuant, PatchEmbedGptqOnCalibrationPatches) {
  LOWBIT_REQUIRE_SHARED(photo, "data/images/extreme_ironing.jpg");
  const std::string images = fs::path(photo).parent_path().string();
  for (const char* rel : {"models/tiny-llava-1.5", "models/tiny-smolvlm"}) {
    LOWBIT_REQUIRE_SHARED(dir, rel);
    const bool v2 = std::string(rel) == "models/tiny-smolvlm";  // the GPTAQ path on the second model
    const std::string tmp = test::temp_dir("vlmq_conv");
    Loaded m = load(dir);
    QuantConfig c;
    c.w_bits = 16;
    c.w_bits_vision = 4;
    c.use_v2 = v2;
    c.quant_patch_embed = true;
    c.cal_dataset = write_conversations(tmp);
    c.cal_image_folder = images;
    c.nsamples = 2;
    c.cal_seqlen = 4096;
    const VlmCalibration cal = load_vlm_calibration(c, *m.tok, dir, m.vlm->language().cfg.max_position);
    ASSERT_EQ(cal.multimodal.size(), 2u);
    const VlmParts P = m.vlm->parts();
    const ClipVisionConfig& vc = P.vision->cfg;
    const Tensor W0t = P.vision->patch_embed.weight_f32();
    const std::vector<float> W0(W0t.f32(), W0t.f32() + W0t.numel());
    Linear rtn = P.vision->patch_embed;
    rtn_linear(rtn, c, 4);
    const Tensor Wrt = rtn.weight_f32();
    const std::vector<float> Wr(Wrt.f32(), Wrt.f32() + Wrt.numel());

    const QuantizedModel q = quantize_vlm(*m.vlm, c, *m.tok, cal);
    EXPECT_EQ(q.report["towers"]["vision"]["patch_embed_method"], "gptq") << rel;
    ASSERT_TRUE(P.vision->patch_embed.qw) << rel;
    const Tensor Wgt = P.vision->patch_embed.weight_f32();
    const std::vector<float> Wg(Wgt.f32(), Wgt.f32() + Wgt.numel());
    ASSERT_EQ(Wg.size(), W0.size());
    EXPECT_NE(Wg, Wr) << rel;

    // The calibration patches, from the pixel values of every frame of every calibration sample.
    const int64_t p = vc.patch_size, S = vc.image_size, G = S / p, C = vc.num_channels, K = C * p * p;
    std::vector<double> X;
    for (const VlmCalibSample& smp : cal.multimodal) {
      std::vector<Image> imgs;
      for (const std::string& f : smp.images) imgs.push_back(decode_image(f));
      m.vlm->set_images(imgs);
      ForwardOptions fo;
      fo.tower_hook = [&](const char* st, const float* px, int64_t rows, int64_t cols) {
        if (std::strcmp(st, "pixels") != 0) return;
        ASSERT_EQ(rows * cols, C * S * S);
        for (int64_t gy = 0; gy < G; ++gy)
          for (int64_t gx = 0; gx < G; ++gx)
            for (int64_t ch = 0; ch < C; ++ch)
              for (int64_t ky = 0; ky < p; ++ky)
                for (int64_t kx = 0; kx < p; ++kx)
                  X.push_back(double(px[(ch * S + gy * p + ky) * S + gx * p + kx]));
      };
      m.vlm->embed(m.vlm->prompt_ids(*m.tok, smp.text), fo);
    }
    ASSERT_EQ(int64_t(X.size()) % K, 0);
    EXPECT_EQ(int64_t(X.size()) / K, q.report["patch_embed"]["patches"].get<int64_t>()) << rel;
    const double eg = conv_error(X, K, W0, Wg), er = conv_error(X, K, W0, Wr);
    std::printf("%s patch_embed (%s, %lld patches): GPTQ %.6f  RTN %.6f\n", rel, v2 ? "gptaq run" : "gptq run",
                (long long)(int64_t(X.size()) / K), eg, er);
    EXPECT_LE(eg, er) << rel;
    EXPECT_GT(eg, 0.0) << rel;

    // Reloaded == in memory: the conv's codes and the logits of an image prompt.
    save_quantized_vlm(*m.vlm, q, dir, tmp + "/q");
    std::unique_ptr<Vlm> r = load_vlm(tmp + "/q");
    const Tensor Wl = r->parts().vision->patch_embed.weight_f32();
    EXPECT_EQ(std::vector<float>(Wl.f32(), Wl.f32() + Wl.numel()), Wg) << rel;
    const Probe a = probe(*m.vlm, dir, *m.tok, photo);
    const Probe b = probe(*r, tmp + "/q", *m.tok, photo);
    EXPECT_EQ(a.logits, b.logits) << rel;
    const nlohmann::json meta = nlohmann::json::parse(test::read_file(tmp + "/q/lowbit_quant.json"));
    EXPECT_EQ(meta["towers"]["vision"]["patch_embed_method"], "gptq") << rel;
  }
}

TEST(VlmQuantCli, WbitsFieldCount) {
  LOWBIT_REQUIRE_SHARED(dir, "models/tiny-llava-1.5");
  const std::string tmp = test::temp_dir("vlmq_cli");
  const test::RunResult r = test::run_lowbit("quantize --model " + dir + " --out " + tmp + "/q --wbits 4,4 --w_rtn");
  test::expect_error_line(r, "--wbits '4,4'", 2);
  EXPECT_FALSE(fs::exists(tmp + "/q"));
  const std::string q = "quantize --model " + dir + " --out " + tmp + "/q --w_rtn ";
  test::expect_error_line(test::run_lowbit(q + "--wbits 4,4,4,4"), "got 4 fields", 2);
  test::expect_error_line(test::run_lowbit(q + "--wbits 4,x,4"), "'x' is not an integer", 2);
  test::expect_error_line(test::run_lowbit(q + "--wbits 4,4,4 --w_bits 4"), "--wbits and --w_bits", 2);
  test::expect_error_line(test::run_lowbit(q + "--wbits 4,3,1"), "language width 1", 2);
  test::expect_error_line(test::run_lowbit(q + "--w_bits 4 --exclude-conv --include-conv"), "--exclude-conv", 2);
  // Per-tower settings on a text-only model are refused, not ignored.
  LOWBIT_REQUIRE_SHARED(llama, "models/stories260K");
  test::expect_error_line(test::run_lowbit("quantize --model " + llama + " --out " + tmp + "/l --w_rtn --wbits 4,4,4"),
                          "is for vision-language models", 2);
  EXPECT_FALSE(fs::exists(tmp + "/q"));
}

// The CLI end to end: per-tower RTN on a VLM directory, the checkpoint answers generate --image.
TEST(VlmQuantCli, QuantizeThenGenerateWithImage) {
  LOWBIT_REQUIRE_SHARED(dir, "models/tiny-llava-1.5");
  LOWBIT_REQUIRE_SHARED(photo, "data/images/waterview.jpg");
  const std::string tmp = test::temp_dir("vlmq_cli2");
  const test::RunResult q =
      test::run_lowbit("quantize --model " + dir + " --out " + tmp + "/q --wbits 8,8,4 --w_rtn --quiet");
  ASSERT_EQ(q.exit_code, 0) << q.out;
  const nlohmann::json meta = nlohmann::json::parse(test::read_file(tmp + "/q/lowbit_quant.json"));
  EXPECT_EQ(meta["towers"]["vision"]["w_bits"], 8);
  EXPECT_EQ(meta["towers"]["language"]["lm_head_w_bits"], 4);  // --wbits V,P,L: lm_head at L
  const test::RunResult g = test::run_lowbit("generate --model " + tmp + "/q --image " + photo +
                                             " --prompt 'What is this?' --max-new-tokens 3 --quiet");
  EXPECT_EQ(g.exit_code, 0) << g.out;
  // inspect shows the towers of the quantized checkpoint with their widths.
  const test::RunResult in = test::run_lowbit("inspect " + tmp + "/q");
  ASSERT_EQ(in.exit_code, 0) << in.out;
  EXPECT_NE(in.out.find("[vision]"), std::string::npos) << in.out;
  EXPECT_NE(in.out.find("vision_tower.encoder.layers.0.mlp.fc1                       128x64  int8"), std::string::npos)
      << in.out;
}

// A text file calibrates the language model alone: GPTQ on the decoder (--wbits 16,16,4) runs
// through eval ppl's in-memory quantization; GPTQ on the vision tower needs images (one error
// line naming --image_folder); eval ppl reads a quantized VLM checkpoint's language model.
TEST(VlmQuantCli, TextCalibrationIsLanguageOnly) {
  LOWBIT_REQUIRE_SHARED(dir, "models/tiny-llava-1.5");
  LOWBIT_REQUIRE_SHARED(text, "data/text/tinystories_val.txt");
  const std::string tmp = test::temp_dir("vlmq_txt");
  const std::string ppl = "eval ppl --data " + text + " --data-end 20000 --seqlen 128 --max-windows 2 ";
  const std::string cal = " --cal_dataset " + text + " --cal_end 200000 --nsamples 4 --cal_seqlen 128";
  const nlohmann::json fp = test::run_lowbit_json(ppl + "--model " + dir, tmp + "/fp.json");
  const nlohmann::json q = test::run_lowbit_json(ppl + "--model " + dir + " --wbits 16,16,4" + cal, tmp + "/q.json");
  ASSERT_FALSE(fp.is_null());
  ASSERT_FALSE(q.is_null());
  EXPECT_NE(fp["ppl"], q["ppl"]);
  test::expect_error_line(test::run_lowbit(ppl + "--model " + dir + " --w_bits 4" + cal), "--image_folder", 2);
  ASSERT_EQ(test::run_lowbit("quantize --model " + dir + " --out " + tmp + "/ck --wbits 16,16,4 --w_rtn --quiet").exit_code, 0);
  const nlohmann::json ck = test::run_lowbit_json(ppl + "--model " + tmp + "/ck", tmp + "/ck.json");
  ASSERT_FALSE(ck.is_null());
  EXPECT_NE(ck["ppl"], fp["ppl"]);
}

}  // namespace
}  // namespace lowbit
