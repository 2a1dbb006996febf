// Scores and reports of `eval vqa` (see vqa_score.h).
#include "eval/vqa_score.h"

#include <cmath>

#include "core/error.h"
#include "eval/vqa_metrics.h"

namespace lowbit {

using json = nlohmann::json;

namespace {
std::string strip(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\n\r\v\f");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\n\r\v\f") - b + 1);
}
double round2(double x) { return std::round(x * 100.0) / 100.0; }
}  // namespace

std::string vqa_answer_as_scored(VqaTask task, const VqaQuestion& q, const std::string& generated) {
  switch (task) {
    case VqaTask::VQAv2:
    case VqaTask::TextVQA: return strip(generated);
    case VqaTask::VizWiz: return evalai_normalize(generated);
    case VqaTask::ScienceQA: return scienceqa_extract_letter(generated, q.options);
  }
  return generated;
}

double vqa_score(VqaTask task, const VqaQuestion& q, const std::string& answer) {
  switch (task) {
    case VqaTask::VQAv2:
    case VqaTask::VizWiz: return vqa_official_accuracy(answer, q.answers);
    case VqaTask::TextVQA: return textvqa_accuracy(answer, q.answers);
    case VqaTask::ScienceQA: return answer == q.answer_letter ? 1.0 : 0.0;
  }
  return 0.0;
}

VqaReport vqa_report(const VqaDataset& d, const std::vector<const VqaQuestion*>& questions,
                     const std::map<std::string, json>& records, const json& config) {
  VqaReport r;
  json list = json::array();
  double sum = 0;
  int64_t scored = 0, skipped = 0;
  std::map<std::string, std::map<std::string, std::pair<double, int64_t>>> by;  // group → value → (sum, n)
  json submission = json::array();
  for (const VqaQuestion* q : questions) {
    auto it = records.find(q->key);
    LOWBIT_ASSERT(it != records.end());
    const json& rec = it->second;
    json e = {{"key", q->key}, {"question_id", q->question_id}};
    const bool skip = rec.value("skipped", false);
    std::string answer;
    if (skip) {
      e["skipped"] = true;
      e["reason"] = rec.value("reason", "");
      ++skipped;
    } else {
      answer = rec.value("answer", "");
      e["answer"] = answer;
      e["text"] = rec.value("text", "");
      if (q->has_truth) {
        const double s = vqa_score(d.task, *q, answer);
        e["score"] = s;
        sum += s;
        ++scored;
        for (const auto& [g, v] : q->groups) {
          auto& cell = by[g][v];
          cell.first += s;
          cell.second += 1;
        }
      }
    }
    if (d.task == VqaTask::VQAv2) submission.push_back({{"question_id", q->question_id}, {"answer", answer}});
    if (d.task == VqaTask::VizWiz) submission.push_back({{"image", q->image}, {"answer", answer}});
    list.push_back(std::move(e));
  }
  r.results = {{"task", vqa_task_name(d.task)}, {"config", config}, {"questions", std::move(list)}};
  if (d.task == VqaTask::VQAv2 || d.task == VqaTask::VizWiz) r.submission = std::move(submission);
  if (d.scored) {
    const double acc = scored ? sum / double(scored) : 0.0;
    json groups = json::object();
    for (const auto& [g, vals] : by)
      for (const auto& [v, cell] : vals)
        groups[g][v] = {{"accuracy", cell.first / double(cell.second)}, {"questions", cell.second}};
    r.accuracy = {{"task", vqa_task_name(d.task)}, {"accuracy", acc},      {"accuracy_percent", round2(100.0 * acc)},
                  {"questions", scored},            {"skipped", skipped}, {"by", groups}};
    r.results["accuracy"] = acc;
  }
  return r;
}

}  // namespace lowbit
