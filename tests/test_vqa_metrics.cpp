// VQA metrics (src/eval/vqa_metrics.h): every normalization rule of the official VQA evaluator
// (A1-A5), EvalAI's processor (B1-B4) and VLMEvalKit's option extraction (C1-C4), with its
// conditions. Every expected value is worked out by hand in the comment next to it.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "eval/vqa_metrics.h"

using namespace lowbit;

namespace {
std::vector<std::string> rep(const std::string& s, int n) { return std::vector<std::string>(size_t(n), s); }
std::vector<std::string> cat(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}
}  // namespace

// A5: 10 answers, the prediction equal to k of them. Leaving out answer i: if i is a match, k-1
// matches remain, else k; acc_i = min(1, matches/3); the mean over the 10 subsets.
TEST(VqaMetrics, LeaveOneOutAveraging) {
  const auto answers = [](int k) { return cat(rep("cat", k), rep("dog", 10 - k)); };
  EXPECT_DOUBLE_EQ(leave_one_out_accuracy("cat", answers(0)), 0.0);
  // k=1: 1 subset with 0 matches, 9 subsets with 1 → 9·(1/3)/10 = 0.3
  EXPECT_NEAR(leave_one_out_accuracy("cat", answers(1)), 0.3, 1e-12);
  // k=2: 2 subsets with 1 match (1/3), 8 with 2 (2/3) → (2/3 + 16/3)/10 = 0.6
  EXPECT_NEAR(leave_one_out_accuracy("cat", answers(2)), 0.6, 1e-12);
  // k=3: 3 subsets with 2 (2/3), 7 with 3 (1) → (2 + 7)/10 = 0.9
  EXPECT_NEAR(leave_one_out_accuracy("cat", answers(3)), 0.9, 1e-12);
  // k=4: 4 subsets with 3 (1), 6 with 4 (min 1) → 1.0
  EXPECT_NEAR(leave_one_out_accuracy("cat", answers(4)), 1.0, 1e-12);
  EXPECT_NEAR(leave_one_out_accuracy("cat", answers(10)), 1.0, 1e-12);
  // Matching is exact string equality (normalization is the callers' job).
  EXPECT_DOUBLE_EQ(leave_one_out_accuracy("Cat", answers(10)), 0.0);
}

// A3: punctuation deleted when it touches a space (in the ORIGINAL text) or when a
// digit-comma-digit is anywhere in the text; otherwise replaced by a space.
TEST(VqaMetrics, ProcessPunctuation) {
  EXPECT_EQ(vqa_process_punctuation("hello, world"), "hello world");  // ", " → ',' deleted
  EXPECT_EQ(vqa_process_punctuation("a,b"), "a b");                    // no space next to ',' → ' '
  EXPECT_EQ(vqa_process_punctuation("1,000"), "1000");                 // digit-comma-digit → deleted
  EXPECT_EQ(vqa_process_punctuation("yes-no"), "yes no");              // '-' → ' '
  EXPECT_EQ(vqa_process_punctuation("well - done"), "well  done");     // " -" → deleted, both spaces stay
  // Each mark decides by itself: ',' touches a space (deleted), '-' does not (space).
  EXPECT_EQ(vqa_process_punctuation("x, y-z"), "x y z");
  // The condition reads the ORIGINAL text: in "a;-b" the ';' becomes a space ("a -b"), but '-'
  // touched no space in "a;-b", so it is replaced too: "a  b" (judging "a -b" would delete it).
  EXPECT_EQ(vqa_process_punctuation("a;-b"), "a  b");
  // A digit-comma-digit anywhere deletes every listed mark: "1,5 (a-b)" → "15 ab".
  EXPECT_EQ(vqa_process_punctuation("1,5 (a-b)"), "15 ab");
  // Every mark of the list: ; / [ ] " { } ( ) = + \ _ - > < @ ` , ? ! → one space each.
  EXPECT_EQ(vqa_process_punctuation("a;b/c[d]e\"f{g}h(i)j=k+l\\m_n-o>p<q@r`s,t?u!v"),
            "a b c d e f g h i j k l m n o p q r s t u v");
  // Marks outside the list stay: ':' '\'' '#' '%'.
  EXPECT_EQ(vqa_process_punctuation("it's 10%: #1"), "it's 10%: #1");
  // Periods: deleted unless a digit follows.
  EXPECT_EQ(vqa_process_punctuation("3.5"), "3.5");
  EXPECT_EQ(vqa_process_punctuation("end."), "end");
  EXPECT_EQ(vqa_process_punctuation("a.b"), "ab");
  EXPECT_EQ(vqa_process_punctuation("v1.2."), "v1.2");  // the first '.' has a digit after it
  // At most 32 periods are deleted (re.UNICODE = 32 passed as re.sub's count): 40 dots + "x"
  // keeps the last 8.
  EXPECT_EQ(vqa_process_punctuation(std::string(40, '.') + "x"), std::string(8, '.') + "x");
}

// A4: lower-case, number words → digits, articles dropped, contractions expanded.
TEST(VqaMetrics, ProcessDigitArticle) {
  EXPECT_EQ(vqa_process_digit_article("The Two dogs"), "2 dogs");         // "the" dropped, two → 2
  EXPECT_EQ(vqa_process_digit_article("an apple a day"), "apple day");
  EXPECT_EQ(vqa_process_digit_article("none"), "0");
  EXPECT_EQ(vqa_process_digit_article("zero one three ten eleven"), "0 1 3 10 eleven");
  EXPECT_EQ(vqa_process_digit_article("  dont   stop  "), "don't stop");  // whitespace collapsed
  EXPECT_EQ(vqa_process_digit_article("whats up"), "what's up");
  EXPECT_EQ(vqa_process_digit_article("Youre"), "you're");  // lower-cased before the table
  // The table's capitalised keys never match a lower-cased word: "Im" → "im", not "I'm".
  EXPECT_EQ(vqa_process_digit_article("Im here"), "im here");
  // A word must equal a key: "dont's" is not "dont".
  EXPECT_EQ(vqa_process_digit_article("dont's"), "dont's");
  EXPECT_EQ(vqa_process_digit_article("ÉCOLE"), "école");  // Latin-1 letters lower-cased too
}

// A1 + A2 + A5: normalization only when the answers are not all identical.
TEST(VqaMetrics, OfficialVqaAccuracyCondition) {
  // All ten "Yes": no normalization; the stripped prediction must equal "Yes" exactly.
  EXPECT_DOUBLE_EQ(vqa_official_accuracy("Yes", rep("Yes", 10)), 1.0);
  EXPECT_DOUBLE_EQ(vqa_official_accuracy(" Yes\n", rep("Yes", 10)), 1.0);  // A1: '\n' → ' ', strip
  EXPECT_DOUBLE_EQ(vqa_official_accuracy("yes", rep("Yes", 10)), 0.0);    // case differs
  EXPECT_DOUBLE_EQ(vqa_official_accuracy("Yes.", rep("Yes", 10)), 0.0);   // period not stripped
  EXPECT_DOUBLE_EQ(vqa_official_accuracy("2", rep("two", 10)), 0.0);      // "two" not mapped
  // Not all identical (9 × "yes", 1 × "Yes."): both sides normalized; "Yes." → "Yes" → "yes",
  // and the prediction "Yes!" → "Yes " → "yes": 10 matches → 1.0.
  EXPECT_DOUBLE_EQ(vqa_official_accuracy("Yes!", cat(rep("yes", 9), {"Yes."})), 1.0);
  // ["two","two","three"×8] differ: "two" → "2"; prediction "2" matches 2 → 0.6 (k=2 above).
  EXPECT_NEAR(vqa_official_accuracy("2", cat(rep("two", 2), rep("three", 8))), 0.6, 1e-12);
  // A1 on the ground truth too: "\tcat" and "cat " are "cat"; with one "dog" the answers differ;
  // "The cat" → "cat": 9 matches → 1.0.
  EXPECT_DOUBLE_EQ(vqa_official_accuracy("The cat", cat(cat(rep("\tcat", 4), rep("cat ", 5)), {"dog"})), 1.0);
  // A1 makes "\tcat"×5 and "cat"×5 identical: no normalization; "Cat" ≠ "cat" → 0.
  EXPECT_DOUBLE_EQ(vqa_official_accuracy("Cat", cat(rep("\tcat", 5), rep("cat", 5))), 0.0);
}

// B1-B4: EvalAI's processor.
TEST(VqaMetrics, EvalAiProcessor) {
  // lower; '?' deleted; "'s" → " 's"; "the" dropped; "'" is not in the punctuation list.
  EXPECT_EQ(evalai_normalize("What's the Answer?"), "what 's answer");
  EXPECT_EQ(evalai_normalize("1,000"), "1000");               // B1 deletes every comma
  EXPECT_EQ(evalai_normalize("red, white"), "red white");     // ditto (no space left behind twice)
  EXPECT_EQ(evalai_normalize("Hello-World!"), "hello world");  // '-', '!' → spaces, then split
  EXPECT_EQ(evalai_normalize("Ten."), "10");                   // period stripped, ten → 10
  EXPECT_EQ(evalai_normalize("  A\tDog\n"), "dog");            // B2 tabs/newlines, article dropped
  EXPECT_EQ(evalai_normalize("3.5 kg"), "3.5 kg");
  // " (" touches a space: '(' deleted; ')' touches none: ' '; "cant" → "can't".
  EXPECT_EQ(evalai_normalize("cant (stop)"), "can't stop");
}

// TextVQA: B on both sides, then A5 without A2's condition.
TEST(VqaMetrics, TextVqaAccuracy) {
  // All ten "two": normalized to "2"; "2" matches all → 1.0 (the VQA evaluator gives 0 here).
  EXPECT_DOUBLE_EQ(textvqa_accuracy("2", rep("two", 10)), 1.0);
  // "Coca-Cola!" → "coca cola"; answers "Coca Cola"×2 and "coca-cola"×1 → "coca cola"×3, 7 "coke":
  // 3 matches → 0.9 (k=3 above).
  EXPECT_NEAR(textvqa_accuracy("Coca-Cola!", cat(cat(rep("Coca Cola", 2), {"coca-cola"}), rep("coke", 7))), 0.9,
              1e-12);
  EXPECT_DOUBLE_EQ(textvqa_accuracy("pepsi", rep("coke", 10)), 0.0);
  // "What's" → "what 's" (B1), while the answer "whats" → "what's" (contraction table):
  // they differ, 0 matches → 0.
  EXPECT_DOUBLE_EQ(textvqa_accuracy("What's", cat({"whats"}, rep("x", 9))), 0.0);
}

// C1-C4: the option letter.
TEST(VqaMetrics, ScienceQaLetter) {
  const std::map<std::string, std::string> opts = {{"A", "red"}, {"B", "blue"}};
  EXPECT_EQ(scienceqa_extract_letter("B", opts), "B");
  EXPECT_EQ(scienceqa_extract_letter("The answer is B.", opts), "B");   // '.' → ' ', token "B"
  EXPECT_EQ(scienceqa_extract_letter("(A)", opts), "A");
  EXPECT_EQ(scienceqa_extract_letter("B: blue", opts), "B");
  EXPECT_EQ(scienceqa_extract_letter("**A**", opts), "A");              // '*' → ' '
  EXPECT_EQ(scienceqa_extract_letter("A or B", opts), "Z");             // two letters; no option text
  EXPECT_EQ(scienceqa_extract_letter("I think it is blue", opts), "B");  // no letter token → text match
  EXPECT_EQ(scienceqa_extract_letter("Blue!", opts), "B");              // text match is case-insensitive
  EXPECT_EQ(scienceqa_extract_letter("red or blue", opts), "Z");        // two texts match
  EXPECT_EQ(scienceqa_extract_letter("b", opts), "Z");                  // letters are upper-case tokens
  EXPECT_EQ(scienceqa_extract_letter("AB", opts), "Z");                 // not a whole token
  EXPECT_EQ(scienceqa_extract_letter("C", opts), "Z");                  // not an option of this question
  EXPECT_EQ(scienceqa_extract_letter("Z", opts), "Z");
  // "A" as an article counts as the letter (VLMEvalKit only logs this under VERBOSE).
  EXPECT_EQ(scienceqa_extract_letter("A blue whale", opts), "A");
  // Letters take precedence over texts: "B" with the text of A → B.
  EXPECT_EQ(scienceqa_extract_letter("B red", opts), "B");
  // C1: a refusal phrase is 'Z' even with a letter in it.
  EXPECT_EQ(scienceqa_extract_letter("Cannot determine the answer. A", opts), "Z");
}
