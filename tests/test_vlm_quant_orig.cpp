// Quantizing the original LLaVA layout (LlavaLlamaForCausalLM + a separate CLIP directory given
// as --vision-tower; quant/vlm_quant.h): the same result as quantizing the HF layout of the same
// weights, a self-contained output checkpoint (OUT/vision_tower holds the quantized CLIP tower)
// that reloads bit for bit and keeps working after the source CLIP directory is deleted, and the
// CLI (`quantize --vision-tower`, then `generate --image` on the output without it).
// The original layout is written from ../shared/models/tiny-llava-1.5 by
// test::write_llava_original_layout (tests/testing.h).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "io/tokenizer.h"
#include "models/llava.h"
#include "models/templates.h"
#include "models/vlm.h"
#include "quant/checkpoint.h"
#include "quant/vlm_quant.h"
#include "testing.h"

namespace lowbit {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct Loaded {
  std::unique_ptr<Vlm> vlm;
  std::unique_ptr<Tokenizer> tok;
};
Loaded load(const std::string& dir, const std::string& tower = "") {
  Loaded l;
  l.vlm = load_vlm(dir, tower);
  l.tok = load_tokenizer(dir);
  return l;
}

// Prompt ids, decoder input x [T, d] and logits [T, vocab] for one photo and `text`.
struct Probe {
  std::vector<int32_t> ids;
  std::vector<float> x, logits;
};
Probe probe(Vlm& v, const Tokenizer& tok, const std::string& photo, const std::string& text) {
  Probe p;
  v.set_images({decode_image(photo)});
  p.ids = v.prompt_ids(tok, text);
  p.x = v.embed(p.ids);
  const Tensor lg = v.language().forward_embeds(p.x.data(), int64_t(p.ids.size()));
  p.logits.assign(lg.f32(), lg.f32() + lg.numel());
  return p;
}
// The prompt of the directory's own template (--template auto).
std::string auto_prompt(const std::string& dir) {
  return render_prompt(resolve_template("auto", dir), "What is shown here?", 1, template_context(dir));
}

// A conversation JSON (llava_v1_5_mix665k.json's shape) over the two photos of ../shared.
std::string write_conversations(const std::string& dir) {
  const json rows = json::array({
      {{"id", "a1"},
       {"image", "extreme_ironing.jpg"},
       {"conversations",
        {{{"from", "human"}, {"value", "<image>\nWhat is unusual about this image?"}},
         {{"from", "gpt"}, {"value", "A man irons clothes on the back of a moving taxi."}}}}},
      {{"id", "a2"},
       {"image", "waterview.jpg"},
       {"conversations",
        {{{"from", "human"}, {"value", "Describe the scene.\n<image>"}},
         {{"from", "gpt"}, {"value", "A wooden pier leads into a calm lake below mountains."}}}}},
  });
  const std::string path = dir + "/conv.json";
  test::write_file(path, rows.dump(1));
  return path;
}

// A copy of the HF-layout tiny-llava-1.5 whose image processor gives the same pixels in the Fast
// flavour (the HF layout's) and the Slow one (the original layout's): no resize (both photos are
// at least 336 on each side, so the 336 centre crop needs no padding: offsets floor((H − h)/2)
// in both), no rescale, and normalize (v − mean) / std in float32 — the one arithmetic both
// flavours share (vision/clip_processor.cpp: the fused Fast path is taken only with rescale on).
std::string hf_copy_with_plain_processor(const std::string& hf_dir, const std::string& dst) {
  fs::create_directories(dst);
  for (const auto& e : fs::directory_iterator(hf_dir))
    if (e.path().filename() != "processor_config.json") fs::copy_file(e.path(), dst + "/" + e.path().filename().string());
  json proc = json::parse(test::read_file(hf_dir + "/processor_config.json"));
  json& ip = proc["image_processor"];
  ip["do_resize"] = false;
  ip["do_rescale"] = false;
  ip["do_normalize"] = true;
  ip["image_mean"] = {122.5, 116.5, 104.0};
  ip["image_std"] = {68.5, 66.5, 70.3};
  test::write_file(dst + "/processor_config.json", proc.dump(2));
  return dst;
}

// (a) Same weights, same pixels → the same quantized model: the original layout (square variant,
// no pad) quantized with RTN W4 on every tower (patch embedding included), and with GPTQ on the
// vision tower and projector from a conversation JSON, gives the logits of the HF layout
// quantized with the same settings, bit for bit, on the same token sequence (the HF ids with the
// image tokens as LLaVA's -200). The language tower stays at 16 bits in the GPTQ run because its
// calibration prompts differ by design: --template auto renders the original layout's
// conversations with vicuna_v1 (system prompt first) and the HF layout's with llava-1.5, so the
// two decoders see different calibration text; the vision tower and projector see only pixels.
TEST(VlmQuantOriginal, SameAsHfLayout) {
  LOWBIT_REQUIRE_SHARED(hf_src, "models/tiny-llava-1.5");
  LOWBIT_REQUIRE_SHARED(photo, "data/images/extreme_ironing.jpg");
  const std::string images = fs::path(photo).parent_path().string();
  const std::string tmp = test::temp_dir("vlmq_orig_a");
  const std::string hf_dir = hf_copy_with_plain_processor(hf_src, tmp + "/hf");
  const test::LlavaOriginalLayout o = test::write_llava_original_layout(hf_dir, tmp + "/orig", "square");
  const std::string text = "USER: <image>\nWhat is shown here? ASSISTANT:";

  QuantConfig rtn;
  rtn.w_rtn = true;
  rtn.w_bits = rtn.lm_head_w_bits = 4;
  rtn.w_bits_vision = rtn.w_bits_projector = 4;
  rtn.quant_patch_embed = true;
  QuantConfig gptq;
  gptq.w_bits = 16;
  gptq.w_bits_vision = gptq.w_bits_projector = 4;
  gptq.cal_dataset = write_conversations(tmp);
  gptq.cal_image_folder = images;
  gptq.nsamples = 2;
  gptq.cal_seqlen = 4096;

  for (const QuantConfig* c : {&rtn, &gptq}) {
    const char* what = c == &rtn ? "rtn" : "gptq";
    Loaded hf = load(hf_dir), orig = load(o.llava, o.clip);
    // Precondition: the two layouts agree in full precision (ids and the image features).
    const Probe hf0 = probe(*hf.vlm, *hf.tok, photo, text);
    const Probe or0 = probe(*orig.vlm, *orig.tok, photo, text);
    std::vector<int32_t> want = hf0.ids;
    std::replace(want.begin(), want.end(), hf.vlm->parts().image_token_id, kOriginalImageTokenIndex);
    ASSERT_EQ(or0.ids, want);
    ASSERT_EQ(or0.x, hf0.x) << what << ": the processors do not give the same pixels";

    const VlmCalibration hcal = load_vlm_calibration(*c, *hf.tok, hf_dir, hf.vlm->language().cfg.max_position);
    const VlmCalibration ocal = load_vlm_calibration(*c, *orig.tok, o.llava, orig.vlm->language().cfg.max_position);
    ASSERT_EQ(hcal.multimodal.size(), ocal.multimodal.size());
    for (size_t s = 0; s < hcal.multimodal.size(); ++s) EXPECT_EQ(hcal.multimodal[s].images, ocal.multimodal[s].images);
    const QuantizedModel qh = quantize_vlm(*hf.vlm, *c, *hf.tok, hcal);
    const QuantizedModel qo = quantize_vlm(*orig.vlm, *c, *orig.tok, ocal);
    const Probe a = probe(*hf.vlm, *hf.tok, photo, text);
    const Probe b = probe(*orig.vlm, *orig.tok, photo, text);
    EXPECT_NE(a.logits, hf0.logits) << what << ": quantization changed nothing";
    EXPECT_EQ(b.logits, a.logits) << what << " normalized error " << test::normalized_error(b.logits, a.logits);
    EXPECT_EQ(qo.report["towers"]["vision"]["method"], c == &rtn ? "rtn" : "gptq");
  }
}

// (b) in memory == reloaded, (c) self-contained: GPTQ W4 on every tower of the original layout
// with image_aspect_ratio pad; the checkpoint is an original-layout directory with the quantized
// CLIP tower in OUT/vision_tower (config.json's lowbit_vision_tower_dir), reloads without
// --vision-tower to the in-memory logits bit for bit (same pad preprocessing, same vicuna_v1
// prompt), and still does after the source directories are deleted.
TEST(VlmQuantOriginal, CheckpointReloadsSelfContained) {
  LOWBIT_REQUIRE_SHARED(hf_dir, "models/tiny-llava-1.5");
  LOWBIT_REQUIRE_SHARED(photo, "data/images/waterview.jpg");
  const std::string images = fs::path(photo).parent_path().string();
  const std::string tmp = test::temp_dir("vlmq_orig_b");
  const test::LlavaOriginalLayout o = test::write_llava_original_layout(hf_dir, tmp + "/src", "pad");
  Loaded m = load(o.llava, o.clip);
  QuantConfig c;
  c.w_bits = c.lm_head_w_bits = 4;
  c.w_bits_vision = c.w_bits_projector = 4;
  c.quant_patch_embed = true;
  c.cal_dataset = write_conversations(tmp);
  c.cal_image_folder = images;
  c.nsamples = 2;
  c.cal_seqlen = 4096;
  const VlmCalibration cal = load_vlm_calibration(c, *m.tok, o.llava, m.vlm->language().cfg.max_position);
  ASSERT_EQ(cal.multimodal.size(), 2u);
  const Probe fp = probe(*m.vlm, *m.tok, photo, auto_prompt(o.llava));
  const QuantizedModel q = quantize_vlm(*m.vlm, c, *m.tok, cal);
  for (const char* t : {"vision", "projector", "language"})
    EXPECT_EQ(q.report["towers"][t]["method"], "gptq") << t;
  const std::string out = tmp + "/q";
  save_quantized_vlm(*m.vlm, q, o.llava, out);
  const Probe a = probe(*m.vlm, *m.tok, photo, auto_prompt(o.llava));
  EXPECT_NE(a.logits, fp.logits);

  // The layout: an original-layout directory pointing at its own tower subdirectory.
  EXPECT_TRUE(is_llava_original_dir(out));
  EXPECT_TRUE(is_quantized_checkpoint(out));
  const json cfg = json::parse(test::read_file(out + "/config.json"));
  EXPECT_EQ(cfg["lowbit_vision_tower_dir"], "vision_tower");
  EXPECT_EQ(cfg["mm_vision_tower"], "openai/clip-vit-large-patch14-336");  // provenance kept
  EXPECT_EQ(cfg["image_aspect_ratio"], "pad");
  EXPECT_EQ(resolve_template("auto", out), "vicuna_v1");
  for (const char* f : {"config.json", "preprocessor_config.json", "model.safetensors"})
    EXPECT_TRUE(fs::exists(out + "/vision_tower/" + f)) << f;
  const WeightStore top = WeightStore::open_dir(out), tower = WeightStore::open_dir(out + "/vision_tower");
  EXPECT_TRUE(tower.has("vision_model.encoder.layers.0.self_attn.q_proj.qweight"));
  EXPECT_TRUE(tower.has("vision_model.embeddings.patch_embedding.qweight"));
  EXPECT_FALSE(tower.has("vision_model.encoder.layers.0.self_attn.q_proj.weight"));
  EXPECT_TRUE(top.has("model.mm_projector.0.qweight"));
  EXPECT_TRUE(top.has("model.layers.0.self_attn.q_proj.qweight"));
  EXPECT_TRUE(top.has("lm_head.qweight"));
  for (const std::string& n : top.names()) EXPECT_NE(n.rfind("vision_model.", 0), 0u) << n;
  for (const std::string& n : tower.names()) EXPECT_EQ(n.rfind("vision_model.", 0), 0u) << n;

  // (b) reloaded == in memory, without --vision-tower; a tower for it is refused, not ignored.
  {
    Loaded r = load(out);
    const Probe b = probe(*r.vlm, *r.tok, photo, auto_prompt(out));
    ASSERT_EQ(b.ids, a.ids);
    EXPECT_EQ(b.logits, a.logits) << test::normalized_error(b.logits, a.logits);
  }
  EXPECT_THROW(load_vlm(out, o.clip), ArgError);

  // (c) the source directories deleted: still loads, same logits.
  fs::remove_all(o.clip);
  fs::remove_all(o.llava);
  Loaded r = load(out);
  const Probe b = probe(*r.vlm, *r.tok, photo, auto_prompt(out));
  EXPECT_EQ(b.logits, a.logits) << test::normalized_error(b.logits, a.logits);

  // A config pointing outside the checkpoint is a format error, not a path to follow.
  json bad = cfg;
  bad["lowbit_vision_tower_dir"] = "../src/clip";
  fs::remove(out + "/config.json");
  test::write_file(out + "/config.json", bad.dump(2));
  EXPECT_THROW(load_vlm(out), FormatError);
}

// (d) The CLI: quantize --vision-tower, then generate --image on the output alone (the CLIP
// directory deleted first); --vision-tower on an HF-layout directory is a usage error.
TEST(VlmQuantOriginalCli, QuantizeThenGenerate) {
  LOWBIT_REQUIRE_SHARED(hf_dir, "models/tiny-llava-1.5");
  LOWBIT_REQUIRE_SHARED(photo, "data/images/waterview.jpg");
  const std::string tmp = test::temp_dir("vlmq_orig_cli");
  const test::LlavaOriginalLayout o = test::write_llava_original_layout(hf_dir, tmp + "/src", "pad");
  const test::RunResult q = test::run_lowbit("quantize --model " + o.llava + " --vision-tower " + o.clip + " --out " +
                                             tmp + "/q --wbits 8,8,4 --w_rtn --quiet");
  ASSERT_EQ(q.exit_code, 0) << q.out;
  const json meta = json::parse(test::read_file(tmp + "/q/lowbit_quant.json"));
  EXPECT_EQ(meta["family"], "llava_original");
  EXPECT_EQ(meta["towers"]["vision"]["w_bits"], 8);
  EXPECT_EQ(meta["vision_tower_dir"], "vision_tower");
  // eval vqa quantizes the original layout in memory with --vision-tower; RTN is deterministic, so
  // its answers are those of the checkpoint.
  const std::string qs = tmp + "/llava_test.jsonl";
  test::write_file(qs, json{{"question_id", 0}, {"image", fs::path(photo).filename().string()},
                            {"text", "What is this?"}}.dump() + "\n");
  const std::string vqa = "eval vqa --task vizwiz --questions " + qs + " --images " +
                          fs::path(photo).parent_path().string() + " --threads 1 --quiet --max-new-tokens 3 ";
  const test::RunResult e1 = test::run_lowbit(vqa + "--model " + o.llava + " --vision-tower " + o.clip +
                                              " --wbits 8,8,4 --w_rtn --output " + tmp + "/v1");
  ASSERT_EQ(e1.exit_code, 0) << e1.out;
  const test::RunResult e2 = test::run_lowbit(vqa + "--model " + tmp + "/q --output " + tmp + "/v2");
  ASSERT_EQ(e2.exit_code, 0) << e2.out;
  const json a1 = json::parse(test::read_file(tmp + "/v1/answers.jsonl"));
  const json a2 = json::parse(test::read_file(tmp + "/v2/answers.jsonl"));
  EXPECT_EQ(a1["answer"], a2["answer"]);
  fs::remove_all(o.clip);
  const test::RunResult g = test::run_lowbit("generate --model " + tmp + "/q --image " + photo +
                                             " --prompt 'What is this?' --max-new-tokens 3 --quiet");
  EXPECT_EQ(g.exit_code, 0) << g.out;
  // inspect shows the quantized tower (from OUT/vision_tower) without --vision-tower.
  const test::RunResult in = test::run_lowbit("inspect " + tmp + "/q");
  ASSERT_EQ(in.exit_code, 0) << in.out;
  EXPECT_NE(in.out.find("vision_model.encoder.layers.0.mlp.fc1"), std::string::npos) << in.out;
  EXPECT_NE(in.out.find("int8"), std::string::npos) << in.out;
  test::expect_error_line(
      test::run_lowbit("quantize --model " + hf_dir + " --vision-tower " + o.llava + " --out " + tmp + "/h --w_rtn --w_bits 4"),
      "--vision-tower", 2);
  EXPECT_FALSE(fs::exists(tmp + "/h"));
  // Without its tower the original layout says what is missing (one error line, exit 2).
  test::expect_error_line(test::run_lowbit("quantize --model " + o.llava + " --out " + tmp + "/n --w_rtn --w_bits 4"),
                          "--vision-tower", 2);
}

// eval ppl / eval zeroshot quantize the original layout in memory with --vision-tower. The square
// layout holds tiny-llava-1.5's weights, so with the same RTN flags (deterministic) the quantized
// language model's perplexity equals the HF layout's.
TEST(VlmQuantOriginalCli, EvalPplWithVisionTower) {
  LOWBIT_REQUIRE_SHARED(hf_dir, "models/tiny-llava-1.5");
  LOWBIT_REQUIRE_SHARED(ts, "data/text/tinystories_val.txt");
  const std::string tmp = test::temp_dir("vlmq_orig_ppl");
  const test::LlavaOriginalLayout o = test::write_llava_original_layout(hf_dir, tmp + "/src", "square");
  const std::string ppl = "eval ppl --data " + ts + " --data-end 20000 --seqlen 128 --max-windows 2 --threads 1 --quiet ";
  const std::string q = " --wbits 8,8,4 --w_rtn";
  const json a = test::run_lowbit_json(ppl + "--model " + o.llava + " --vision-tower " + o.clip + q, tmp + "/a.json");
  const json b = test::run_lowbit_json(ppl + "--model " + hf_dir + q, tmp + "/b.json");
  const json fp = test::run_lowbit_json(ppl + "--model " + hf_dir, tmp + "/fp.json");
  ASSERT_FALSE(a.is_null() || b.is_null() || fp.is_null());
  EXPECT_EQ(a["ppl"], b["ppl"]);
  EXPECT_NE(a["ppl"], fp["ppl"]);  // the language model really was quantized
  // Quantization flags without the tower, and the tower without quantization flags: one line each.
  test::expect_error_line(test::run_lowbit(ppl + "--model " + o.llava + q), "--vision-tower", 2);
  test::expect_error_line(test::run_lowbit(ppl + "--model " + o.llava + " --vision-tower " + o.clip), "--vision-tower", 2);
  LOWBIT_REQUIRE_SHARED(tasks, "data/tasks");
  test::expect_error_line(test::run_lowbit("eval zeroshot --tasks arc_easy --tasks-dir " + tasks + " --limit 1 --model " + hf_dir +
                                           " --vision-tower " + o.clip + q),
                          "--vision-tower", 2);
}

}  // namespace
}  // namespace lowbit
