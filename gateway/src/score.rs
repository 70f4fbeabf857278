//! The complexity scorer: how hard a chat request is, from fast local features, as a score in [0, 1].
//!
//! A logistic model: `score = sigmoid(BIAS + Σ weight·feature)`. Every feature is a number in [0, 1]
//! computed in one pass over the request's text (no allocation per character, no regex backtracking):
//! length (CJK counted per character), code and math shape, cue words in English and Chinese for hard
//! tasks (proofs, code, design, debugging, analysis, legal/medical/financial questions, planning) and for
//! easy ones (greetings, lookups, translation, classification, rewriting), the requested token cap,
//! conversation depth and whether there is a system prompt.
//!
//! The features, their weights and what each one measures are in one table, [`FEATURES`] (written by the
//! `model!` invocation below). The weights were fitted on the training split of `gateway/data/complexity.jsonl`
//! by the `fit_weights` tool in `gateway/tests/score_eval.rs`, which prints this table; see
//! `docs/ROUTING-SCORER.md` for the method, the evaluation on the test split and the known weaknesses.

mod cues;
mod text;

use r1_proto::{ChatCompletionRequest, Role};

use self::cues::{CUE_LISTS, Scope};
use self::text::{Matcher, SCAN_MAX, TextStats};

/// One feature's contribution to a score, for `explain` output and logs.
#[derive(Debug, Clone, PartialEq)]
pub struct Contribution {
    /// Feature name (a constant: safe to log).
    pub feature: &'static str,
    /// What it added to the logit (negative = simpler).
    pub weight: f32,
}

/// A scored request.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    /// Complexity in [0, 1].
    pub score: f32,
    /// The features that fired, largest effect first.
    pub contributions: Vec<Contribution>,
}

/// One input of the model, as listed by [`Scorer::features`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Feature {
    /// Its name (what [`Contribution::feature`] says).
    pub name: &'static str,
    /// Its weight in the logit; the feature's value is in [0, 1].
    pub weight: f32,
    /// What it measures (the table's comment, as written there).
    about: &'static str,
}

impl Feature {
    /// What the feature measures, in a sentence or two.
    pub fn about(&self) -> &'static str {
        self.about.trim()
    }
}

/// Writes the feature enum `F` (indices into the feature vector) and the table [`FEATURES`] from one list,
/// so a feature's index, name, weight and description cannot drift apart.
macro_rules! model {
    (bias: $bias:expr; $( $(#[doc = $about:literal])+ $variant:ident = $name:literal, $weight:expr; )+) => {
        /// Index of each feature in the vector [`Scorer::extract`] returns.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum F {
            $($(#[doc = $about])+ $variant,)+
        }

        /// The logistic model's intercept.
        pub const BIAS: f32 = $bias;

        /// Every feature, in the order of [`Scorer::extract`], with its weight.
        pub const FEATURES: &[Feature] = &[
            $(Feature { name: $name, weight: $weight, about: concat!($($about),+) },)+
        ];
    };
}

/// How many features the model has.
pub const FEATURE_COUNT: usize = FEATURES.len();

// The model. Weights are fitted (`cargo test -p r1-gateway --test score_eval -- --ignored fit_weights
// --nocapture` prints this block); edit the features, then refit and paste, rather than tuning by hand.
// Values: "sat(n)" = 1 - 0.4^n for n hits (0.6, 0.84, 0.94 …); "conversation" features take the larger of
// the last user message's value and half the value over earlier user turns and system prompts.
model! {
    bias: -1.14;
    /// ln(1 + estimated tokens of the last user message) / ln(4097), at most 1.
    Length = "length", 1.96;
    /// A short ask with no hard-task cue: (1 − tokens/8 for a last message under 8 tokens, else 0) ×
    /// (1 − the strongest hard-task cue below). "hi" and "你好" are tiny; "Prove √2 is irrational." is not.
    Tiny = "tiny", -2.26;
    /// The last user message opens with a hard-task cue: "Design …", "Prove …", "Why …", "请设计…", "证明…".
    LeadingTask = "leading_task", 1.84;
    /// Share of CJK characters in the last user message (Chinese packs more meaning per character).
    CjkShare = "cjk_share", -0.01;
    /// ln(1 + tokens of every other message) / ln(8193), at most 1: how much context comes along.
    History = "history", -0.16;
    /// (user turns − 1) / 4, at most 1: conversation depth.
    Turns = "turns", -0.12;
    /// 1 if a system or developer message is present.
    SystemPrompt = "system_prompt", -0.60;
    /// Requested cap (max_completion_tokens, else max_tokens) above 512: log16(cap / 512), at most 1.
    MaxTokensLarge = "max_tokens_large", 0.36;
    /// Requested cap ≤ 256 → 1, ≤ 512 → 0.5: the client expects a short answer.
    MaxTokensSmall = "max_tokens_small", -0.17;
    /// Pasted code (conversation): a ``` fence or 2+ lines indented by 4 spaces or a tab.
    CodeBlock = "code_block", 0.19;
    /// Code punctuation (conversation): { } ; => -> :: == != && || (), count / 8, at most 1.
    CodeSyntax = "code_syntax", 0.52;
    /// Programming keywords and tool names (conversation): fn, def, #include, SELECT *, tokio, …; sat.
    CodeKeywords = "code_keywords", 0.88;
    /// Error output (conversation): Traceback, panicked at, segmentation fault, KeyError, exit code, …; sat.
    StackTrace = "stack_trace", 0.75;
    /// Math notation (conversation): operators next to numbers and symbols √ ∫ ∑ ≤ π ², count / 6, at most 1.
    MathNotation = "math_notation", 1.09;
    /// LaTeX (conversation): \frac, \int, \sum, $$, …; sat.
    Latex = "latex", 0.35;
    /// Math vocabulary (conversation): integral, eigenvalue, probability, 积分, 方程, 概率, 数列, …; sat.
    MathWords = "math_words", 2.18;
    /// Proof words (conversation): prove, show that, theorem, induction, 证明, 求证, 定理, …; sat.
    Proof = "proof", 1.13;
    /// Reasoning asks (conversation): why, step by step, explain how, derive, 为什么, 原理, 详细, …; sat.
    Reasoning = "reasoning", 1.64;
    /// Comparison asks (conversation): compare, trade-offs, pros and cons, vs, 比较, 优缺点, 权衡, …; sat.
    Compare = "compare", 0.86;
    /// Analysis asks (conversation): analyze, evaluate, critique, implications, 分析, 评估, 影响, …; sat.
    Analysis = "analysis", 0.74;
    /// System design (conversation): design, architecture, distributed, sharding, 设计, 架构, 高并发, …; sat.
    Design = "design", 0.36;
    /// Code writing (conversation): implement, write a function, algorithm, O(n), 实现, 代码, 算法, …; sat.
    CodeTask = "code_task", 1.21;
    /// Debugging (conversation): bug, deadlock, crash, leak, timeout, slow, 报错, 死锁, 排查, …; sat.
    Debug = "debug", 0.95;
    /// Legal (conversation): contract, liability, clause, GDPR, tenant, 合同, 违约, 诉讼, 赔偿, …; sat.
    Legal = "legal", 1.66;
    /// Medical (conversation): diagnosis, dosage, symptoms, patient, 诊断, 剂量, 症状, 副作用, …; sat.
    Medical = "medical", 1.89;
    /// Financial (conversation): tax, portfolio, valuation, DCF, mortgage, 投资, 估值, 房贷, 现金流, …; sat.
    Financial = "financial", 1.27;
    /// Planning (conversation): plan, roadmap, strategy, milestones, migration, 规划, 计划, 方案, …; sat.
    Planning = "planning", 1.63;
    /// Requirements (conversation): must, without, at least, ensure, 要求, 考虑, 保证, plus list items and
    /// questions beyond the first; sat.
    Constraints = "constraints", 1.24;
    /// Greetings and thanks (last turn only): hi, hello, thanks, bye, ok, 你好, 谢谢, 再见, 在吗, …; sat.
    Greeting = "greeting", -0.82;
    /// Small talk (last turn only): how are you, joke, your name, bored, 你是谁, 笑话, 聊天, …; sat.
    SmallTalk = "small_talk", -0.89;
    /// Fact lookups (last turn only): capital of, who wrote, when did, how many, 首都, 是谁, 多少, …; sat.
    Lookup = "lookup", -1.44;
    /// Translation (conversation): translate, how do you say, into French, 翻译, 译成, 怎么说, …; sat.
    Translate = "translate", -1.43;
    /// Classification (conversation): sentiment, positive or negative, classify, spam, 情感, 分类, 好评, …; sat.
    Classify = "classify", -1.85;
    /// Rewriting (conversation): grammar, rephrase, polite, summarize, TL;DR, 改写, 润色, 总结, …; sat.
    Rewrite = "rewrite", -1.21;
    /// Brevity asked (conversation): one word, one sentence, briefly, yes or no, 一句话, 只输出, …; sat.
    Brief = "brief", -0.58;
    /// Definitions (last turn only): what does … mean, define, what is a, 什么意思, 什么是, …; sat.
    Definition = "definition", -1.05;
    /// Long text under a simple task: max(translate, classify, rewrite) × length, so a long paragraph to
    /// translate is not read as a hard request.
    PayloadTask = "payload_task", -1.47;
}

/// The cues of hard tasks: any of them keeps a short ask from counting as [`F::Tiny`].
const HARD_TASK_CUES: [F; 15] = [
    F::CodeKeywords,
    F::StackTrace,
    F::Latex,
    F::MathWords,
    F::Proof,
    F::Reasoning,
    F::Compare,
    F::Analysis,
    F::Design,
    F::CodeTask,
    F::Debug,
    F::Legal,
    F::Medical,
    F::Financial,
    F::Planning,
];

/// The cues that, opening a message, read as an order to do hard work ([`F::LeadingTask`]): verbs, not
/// topics ("Design a …", "Prove …", "Why …", "分析…"; not "Contract …" or "Python …").
const TASK_VERB_CUES: [F; 8] = [
    F::Proof,
    F::Reasoning,
    F::Compare,
    F::Analysis,
    F::Design,
    F::CodeTask,
    F::Debug,
    F::Planning,
];

/// Total bytes of message text scanned per request; messages past it count by size only.
const SCAN_BUDGET: usize = 4 * SCAN_MAX;

/// Scores requests; build once (patterns are compiled here), share across threads.
#[derive(Debug)]
pub struct Scorer {
    /// The cue-word automaton; `None` only if it failed to build, which the unit tests rule out (the
    /// patterns are constants), in which case cue features stay at 0 and the structural ones still work.
    matcher: Option<Matcher>,
}

impl Default for Scorer {
    fn default() -> Self {
        Self::new()
    }
}

impl Scorer {
    /// A scorer with the built-in features and weights.
    pub fn new() -> Self {
        let matcher = match Matcher::build() {
            Ok(matcher) => Some(matcher),
            Err(error) => {
                tracing::error!(%error, "complexity scorer: cue patterns failed to compile; cue features are off");
                None
            }
        };
        Self { matcher }
    }

    /// The model's features with their weights and descriptions, in [`Scorer::extract`] order.
    pub fn features() -> &'static [Feature] {
        FEATURES
    }

    /// Scores `request`.
    pub fn assess(&self, request: &ChatCompletionRequest) -> Assessment {
        let values = self.extract(request);
        let mut logit = BIAS;
        let mut contributions = Vec::new();
        for (feature, value) in FEATURES.iter().zip(values) {
            let effect = feature.weight * value;
            if effect != 0.0 {
                logit += effect;
                contributions.push(Contribution {
                    feature: feature.name,
                    weight: effect,
                });
            }
        }
        contributions.sort_by(|a, b| b.weight.abs().total_cmp(&a.weight.abs()));
        let score = 1.0 / (1.0 + (-logit).exp());
        let score = if score.is_finite() { score.clamp(0.0, 1.0) } else { 0.5 };
        Assessment { score, contributions }
    }

    /// The feature vector of `request`: every value in [0, 1], in [`FEATURES`] order. [`Scorer::assess`]
    /// is `sigmoid(BIAS + Σ weight·value)` of this; the evaluation fits the weights from it.
    pub fn extract(&self, request: &ChatCompletionRequest) -> [f32; FEATURE_COUNT] {
        let conversation = Conversation::read(request, self.matcher.as_ref());
        let last = &conversation.last;
        let context = &conversation.context;
        let mut x = [0.0f32; FEATURE_COUNT];
        let mut set = |feature: F, value: f32| {
            if let Some(slot) = x.get_mut(feature as usize) {
                *slot = if value.is_finite() { value.clamp(0.0, 1.0) } else { 0.0 };
            }
        };

        set(F::Length, log_scale(last.tokens, 4096.0));
        set(F::CjkShare, last.cjk_share());
        set(F::History, log_scale(conversation.history_tokens, 8192.0));
        set(F::Turns, count_f32(conversation.user_turns.saturating_sub(1)) / 4.0);
        set(F::SystemPrompt, if conversation.system { 1.0 } else { 0.0 });

        let cap = request.effective_max_tokens();
        set(
            F::MaxTokensLarge,
            cap.map_or(0.0, |cap| (count_f32(cap) / 512.0).log(16.0)),
        );
        set(
            F::MaxTokensSmall,
            match cap {
                Some(0..=256) => 1.0,
                Some(257..=512) => 0.5,
                _ => 0.0,
            },
        );

        let code_block = |stats: &TextStats| {
            if stats.fences > 0 || stats.indented_lines >= 2 {
                1.0
            } else {
                0.0
            }
        };
        set(F::CodeBlock, blend(code_block(last), code_block(context)));
        set(
            F::CodeSyntax,
            blend(count_f32(last.code_marks) / 8.0, count_f32(context.code_marks) / 8.0),
        );
        set(
            F::MathNotation,
            blend(count_f32(last.math_ops) / 6.0, count_f32(context.math_ops) / 6.0),
        );

        for (list, cues) in CUE_LISTS.iter().enumerate() {
            let hits = |stats: &TextStats| stats.cue_hits.get(list).copied().unwrap_or(0);
            let mut last_hits = u32::from(hits(last));
            let mut context_hits = u32::from(hits(context));
            if cues.feature == F::Constraints {
                last_hits += last.list_items.saturating_sub(1) + last.questions.saturating_sub(1);
                context_hits += context.list_items.saturating_sub(1) + context.questions.saturating_sub(1);
            }
            let value = match cues.scope {
                Scope::LastTurn => saturate(last_hits),
                Scope::Conversation => blend(saturate(last_hits), saturate(context_hits)),
            };
            set(cues.feature, value);
        }

        // Interactions, from the values above.
        let value = |feature: F| x.get(feature as usize).copied().unwrap_or(0.0);
        let hard_task = HARD_TASK_CUES.iter().map(|&feature| value(feature)).fold(0.0, f32::max);
        let tiny = (1.0 - last.tokens / 8.0).max(0.0) * (1.0 - hard_task);
        let leading = CUE_LISTS.iter().enumerate().any(|(list, cues)| {
            TASK_VERB_CUES.contains(&cues.feature) && list < 64 && last.lead_cues & (1 << list) != 0
        });
        let payload = value(F::Translate).max(value(F::Classify)).max(value(F::Rewrite)) * value(F::Length);
        if let Some(slot) = x.get_mut(F::Tiny as usize) {
            *slot = tiny.clamp(0.0, 1.0);
        }
        if let Some(slot) = x.get_mut(F::LeadingTask as usize) {
            *slot = if leading { 1.0 } else { 0.0 };
        }
        if let Some(slot) = x.get_mut(F::PayloadTask as usize) {
            *slot = payload.clamp(0.0, 1.0);
        }
        x
    }
}

/// The request's messages, read once: the last user message, everything else the scorer looks into,
/// and the conversation's shape.
#[derive(Debug, Default)]
struct Conversation {
    /// The last user message (or, without one, the last non-system message).
    last: TextStats,
    /// Earlier user messages and system prompts, merged.
    context: TextStats,
    /// Estimated tokens of every message but the last.
    history_tokens: f32,
    /// How many user messages.
    user_turns: u32,
    /// Whether a system or developer message is present.
    system: bool,
}

impl Conversation {
    fn read(request: &ChatCompletionRequest, matcher: Option<&Matcher>) -> Self {
        let messages = &request.messages;
        let is_system = |role: &Role| matches!(role, Role::System | Role::Developer);
        let last_index = messages
            .iter()
            .rposition(|message| message.role == Role::User)
            .or_else(|| messages.iter().rposition(|message| !is_system(&message.role)));

        let mut conversation = Self::default();
        let mut budget = SCAN_BUDGET;
        // Newest first, so the scan budget goes to the messages that matter most.
        for (index, message) in messages.iter().enumerate().rev() {
            let is_user = message.role == Role::User;
            let system = is_system(&message.role);
            conversation.user_turns += u32::from(is_user);
            conversation.system |= system;
            let text = message.text();
            if Some(index) == last_index {
                budget = budget.saturating_sub(text.len().min(SCAN_MAX));
                conversation.last = TextStats::scan(&text, matcher);
            } else if (is_user || system) && budget > 0 {
                budget = budget.saturating_sub(text.len().min(SCAN_MAX));
                let stats = TextStats::scan(&text, matcher);
                conversation.history_tokens += stats.tokens;
                conversation.context.merge(&stats);
            } else {
                // Assistant and tool messages, and whatever is past the budget: size only.
                conversation.history_tokens += byte_len_f32(text.len()) / 3.0;
            }
        }
        conversation
    }
}

impl TextStats {
    /// Adds `other`'s counts to these.
    fn merge(&mut self, other: &Self) {
        self.tokens += other.tokens;
        self.chars = self.chars.saturating_add(other.chars);
        self.cjk_chars = self.cjk_chars.saturating_add(other.cjk_chars);
        self.math_ops = self.math_ops.saturating_add(other.math_ops);
        self.code_marks = self.code_marks.saturating_add(other.code_marks);
        self.fences = self.fences.saturating_add(other.fences);
        self.indented_lines = self.indented_lines.saturating_add(other.indented_lines);
        self.list_items = self.list_items.saturating_add(other.list_items);
        self.questions = self.questions.saturating_add(other.questions);
        if self.cue_hits.len() < other.cue_hits.len() {
            self.cue_hits.resize(other.cue_hits.len(), 0);
        }
        for (mine, theirs) in self.cue_hits.iter_mut().zip(&other.cue_hits) {
            *mine = mine.saturating_add(*theirs);
        }
    }
}

/// `1 - 0.4^hits`: the first hit counts most, more hits add less.
fn saturate(hits: u32) -> f32 {
    1.0 - 0.4f32.powi(i32::try_from(hits.min(32)).unwrap_or(32))
}

/// A conversation feature: the last message's value, or half the context's if that is larger.
fn blend(last: f32, context: f32) -> f32 {
    last.min(1.0).max(0.5 * context.min(1.0))
}

/// `ln(1 + value) / ln(1 + full)`, at most 1.
fn log_scale(value: f32, full: f32) -> f32 {
    ((1.0 + value.max(0.0)).ln() / (1.0 + full).ln()).min(1.0)
}

#[allow(clippy::cast_precision_loss)]
fn count_f32(count: u32) -> f32 {
    count as f32
}

#[allow(clippy::cast_precision_loss)]
fn byte_len_f32(len: usize) -> f32 {
    len as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use r1_proto::{ChatMessage, ContentPart, MessageContent, Nullable};

    /// The routing config's default thresholds.
    const EDGE_MAX: f32 = 0.30;
    const CENTER_MIN: f32 = 0.30;

    fn user(text: &str) -> ChatCompletionRequest {
        ChatCompletionRequest::new("m", vec![ChatMessage::user(text)])
    }

    fn conversation(messages: Vec<ChatMessage>) -> ChatCompletionRequest {
        ChatCompletionRequest::new("m", messages)
    }

    fn check(scorer: &Scorer, request: &ChatCompletionRequest) -> Assessment {
        let assessment = scorer.assess(request);
        assert!(
            assessment.score.is_finite() && (0.0..=1.0).contains(&assessment.score),
            "score {} for {request:?}",
            assessment.score
        );
        for value in scorer.extract(request) {
            assert!(
                value.is_finite() && (0.0..=1.0).contains(&value),
                "feature value {value}"
            );
        }
        assessment
    }

    fn value(scorer: &Scorer, text: &str, feature: F) -> f32 {
        scorer.extract(&user(text))[feature as usize]
    }

    #[test]
    fn patterns_compile() {
        assert!(Scorer::new().matcher.is_some());
    }

    #[test]
    fn table_and_enum_agree() {
        assert_eq!(FEATURES.len(), F::PayloadTask as usize + 1);
        assert_eq!(FEATURES[F::Length as usize].name, "length");
        assert_eq!(FEATURES[F::PayloadTask as usize].name, "payload_task");
        let mut names: Vec<_> = FEATURES.iter().map(|feature| feature.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FEATURES.len(), "feature names are unique");
        for feature in Scorer::features() {
            assert!(
                !feature.about().is_empty() && !feature.about().starts_with(' '),
                "{}",
                feature.name
            );
            assert!(feature.weight.is_finite());
        }
        for list in CUE_LISTS {
            assert!(!list.patterns.is_empty());
        }
        assert!(CUE_LISTS.len() <= 64, "lead_cues is a 64-bit set");
    }

    #[test]
    fn scorer_is_shareable() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<Scorer>();
    }

    #[test]
    fn short_hard_asks_go_to_center() {
        let scorer = Scorer::new();
        for text in [
            "Prove √2 is irrational.",
            "Prove that there are infinitely many primes.",
            "设计一个分布式锁",
            "证明：存在无穷多个素数。",
            "Implement a B-tree in C++.",
            "求解：x² − 5x + 6 = 0",
            "帮我分析一下这份合同的风险",
            "Why does my Rust code deadlock?\n```rust\nlet a = m.lock().unwrap();\nlet b = m.lock().unwrap();\n```",
            "为什么我的 Go 程序会内存泄漏？",
            "Compare Raft and Paxos.",
        ] {
            let assessment = check(&scorer, &user(text));
            assert!(assessment.score >= CENTER_MIN, "{text:?}: {assessment:?}");
        }
    }

    #[test]
    fn small_asks_go_to_edge() {
        let scorer = Scorer::new();
        for text in [
            "你好",
            "hi",
            "Hello!",
            "thanks",
            "谢谢！",
            "What is the capital of France?",
            "法国的首都是哪里？",
            "Translate 'I love you' into French.",
            "把“我爱你”翻译成英文",
            "Is this review positive or negative? 'Great food, slow service.'",
            "判断情感：“这家店的服务太差了”",
            "讲个笑话",
            "What's 2+2?",
            "Tell me a joke 😂",
        ] {
            let assessment = check(&scorer, &user(text));
            assert!(assessment.score <= EDGE_MAX, "{text:?}: {assessment:?}");
        }
    }

    #[test]
    fn a_long_paragraph_to_translate_is_not_hard() {
        let scorer = Scorer::new();
        let paragraph = "The village holds a market every Saturday. Farmers bring vegetables, cheese and bread, \
            and children run between the stalls while their parents talk over coffee. "
            .repeat(6);
        let request = user(&format!("Translate into German:\n\n{paragraph}"));
        let assessment = check(&scorer, &request);
        assert!(assessment.score < CENTER_MIN, "{assessment:?}");
        let chinese =
            "我们的小镇每个周六早上都会在广场上举办集市，农民带来蔬菜、奶酪和面包，孩子们在摊位之间跑来跑去。"
                .repeat(6);
        let assessment = check(&scorer, &user(&format!("请翻译成英文：{chinese}")));
        assert!(assessment.score < CENTER_MIN, "{assessment:?}");
    }

    #[test]
    fn the_last_turn_weighs_most() {
        let scorer = Scorer::new();
        let design = "Design a URL shortener for 10k writes/s: storage, ID generation, caching, failure modes.";
        let then_thanks = conversation(vec![
            ChatMessage::user(design),
            ChatMessage::assistant("Here is a design: ..."),
            ChatMessage::user("thanks!"),
        ]);
        let hard = check(&scorer, &user(design)).score;
        let thanks = check(&scorer, &then_thanks).score;
        assert!(thanks < hard, "{thanks} vs {hard}");
        assert!(thanks <= EDGE_MAX, "{thanks}");

        let hello_then_hard = conversation(vec![
            ChatMessage::user("hi"),
            ChatMessage::assistant("Hello! How can I help?"),
            ChatMessage::user("Prove that a group of prime order is cyclic."),
        ]);
        assert!(check(&scorer, &hello_then_hard).score >= CENTER_MIN);
    }

    #[test]
    fn a_large_token_cap_raises_the_score() {
        let scorer = Scorer::new();
        let mut request = user("Summarize the history of Rome.");
        let plain = check(&scorer, &request).score;
        request.max_completion_tokens = Some(16_384);
        let large = check(&scorer, &request).score;
        request.max_completion_tokens = Some(64);
        let small = check(&scorer, &request).score;
        assert!(small < plain && plain < large, "{small} {plain} {large}");
    }

    #[test]
    fn contributions_explain_the_score() {
        let scorer = Scorer::new();
        let assessment = check(&scorer, &user("Why does my Rust code deadlock? Explain step by step."));
        let logit = BIAS + assessment.contributions.iter().map(|c| c.weight).sum::<f32>();
        assert!((1.0 / (1.0 + (-logit).exp()) - assessment.score).abs() < 1e-5);
        assert!(
            assessment
                .contributions
                .windows(2)
                .all(|pair| pair[0].weight.abs() >= pair[1].weight.abs()),
            "largest effect first: {assessment:?}"
        );
        assert!(assessment.contributions.iter().all(|c| c.weight != 0.0));
        assert!(assessment.contributions.iter().any(|c| c.feature == "debug"));
    }

    #[test]
    fn cue_words_match_whole_words_in_english_and_anywhere_in_chinese() {
        let scorer = Scorer::new();
        assert_eq!(value(&scorer, "this is it", F::Greeting), 0.0, "hi inside this");
        assert_eq!(value(&scorer, "Think about it", F::Greeting), 0.0);
        assert!(value(&scorer, "Hi there", F::Greeting) > 0.0);
        assert!(value(&scorer, "HELLO", F::Greeting) > 0.0, "ASCII is case-insensitive");
        assert!(value(&scorer, "we need to derive it", F::Reasoning) > 0.0);
        assert!(value(&scorer, "the derivation", F::Reasoning) > 0.0);
        assert!(value(&scorer, "请证明这个结论", F::Proof) > 0.0);
        assert!(
            value(&scorer, "用Python实现", F::CodeKeywords) > 0.0,
            "next to CJK is a boundary"
        );
        assert!(value(&scorer, "Prove it, please", F::LeadingTask) > 0.0);
        assert_eq!(
            value(&scorer, "Can you tell me, many years later, why", F::LeadingTask),
            0.0
        );
    }

    #[test]
    fn cjk_text_counts_more_tokens_per_character() {
        let scorer = Scorer::new();
        let chinese = value(&scorer, "今天天气很好我们出去走走吧", F::Length);
        let english = value(&scorer, "today is nice", F::Length);
        assert!(chinese > english, "{chinese} vs {english}");
        assert!(value(&scorer, "今天天气很好", F::CjkShare) > 0.9);
    }

    #[test]
    fn odd_inputs_score_finite() {
        let scorer = Scorer::new();
        let huge = "word ".repeat(20_000) + "prove the theorem";
        let huge_cjk = "汉".repeat(40_000);
        let parts = ChatMessage {
            content: Nullable::Value(MessageContent::Parts(vec![
                ContentPart::text("Describe this image"),
                serde_json::from_value(serde_json::json!({"type": "image_url", "image_url": {"url": "x"}})).unwrap(),
                ContentPart::text("and prove the claim in it"),
            ])),
            ..ChatMessage::user("")
        };
        let null_content = ChatMessage {
            content: Nullable::Null,
            ..ChatMessage::assistant("")
        };
        let cases = vec![
            conversation(vec![]),
            conversation(vec![ChatMessage::system("You are a helpful assistant.")]),
            conversation(vec![ChatMessage::assistant("only an assistant message")]),
            conversation(vec![ChatMessage::new(Role::Other("narrator".into()), "odd role")]),
            conversation(vec![ChatMessage::user("")]),
            conversation(vec![null_content, ChatMessage::user("ok")]),
            conversation(vec![parts]),
            user(&huge),
            user(&huge_cjk),
            user("😀😃😄😁😆😅🤣😂🙂🙃"),
            user("\u{0}\u{1}\u{200b}\u{feff}\r\n\t"),
            user(&"{};=>::".repeat(5_000)),
            user(&"1+2=3 ".repeat(10_000)),
            user(&"`".repeat(1_000)),
            conversation((0..500).map(|i| ChatMessage::user(format!("turn {i}: why?"))).collect()),
        ];
        for request in &cases {
            check(&scorer, request);
        }
        let mut capped = user("hi");
        capped.max_tokens = Some(u32::MAX);
        check(&scorer, &capped);
        capped.max_tokens = Some(0);
        check(&scorer, &capped);
    }

    #[test]
    fn a_long_text_is_scanned_by_head_and_tail() {
        let scorer = Scorer::new();
        // The cue sits at the very end of a 100 KB message: the tail scan still sees it.
        let text = "lorem ipsum ".repeat(9_000) + "Please prove the theorem.";
        assert!(text.len() > SCAN_MAX);
        let x = scorer.extract(&user(&text));
        assert!(x[F::Proof as usize] > 0.0);
        assert!(x[F::Length as usize] > 0.9, "size figures stand for the whole text");
    }
}
