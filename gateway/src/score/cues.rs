//! The word lists behind the scorer's cue features, in English and Chinese.
//!
//! Pattern syntax, chosen so a list reads like a list of words:
//! - ASCII letters match case-insensitively and as **whole words**: `hi` does not fire inside `this`.
//! - A trailing `*` lets the word go on (`deriv*`: derive, derivation); a leading `*` lets it start
//!   earlier (`*overflow`: stackoverflow). Spaces inside a pattern match one space exactly.
//! - Patterns that start or end with a non-word character (`#include`, `\frac`, `error[`) have no
//!   boundary on that side; Chinese patterns match anywhere (Chinese has no spaces to bound words).
//!
//! Each list feeds one feature of the model in [`super::FEATURES`]; a hit in the last user message counts
//! fully, a hit in earlier user turns or the system prompt counts half ([`Scope::Conversation`]), or not at
//! all when only the current ask can mean it ([`Scope::LastTurn`]: "thanks" three turns ago says nothing).

use super::F;

/// Which messages a cue list is looked for in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    /// The last user message only.
    LastTurn,
    /// The last user message fully, earlier user messages and system prompts at half weight.
    Conversation,
}

/// One cue list: the feature it feeds, where it is looked for, and its patterns.
#[derive(Debug)]
pub(super) struct CueList {
    pub(super) feature: F,
    pub(super) scope: Scope,
    pub(super) patterns: &'static [&'static str],
}

/// Every cue list. A pattern may appear in more than one list.
#[rustfmt::skip] // a word list reads best packed, not one word per line
pub(super) const CUE_LISTS: &[CueList] = &[
    CueList { feature: F::CodeKeywords, scope: Scope::Conversation, patterns: &[
        "fn", "def", "impl", "struct", "enum", "async fn", "await", "return", "import", "#include", "println!",
        "printf(", "console.log", "let mut", "const", "var", "func", "public static", "void", "useEffect", "unwrap()",
        "std::", "self.", "this.", "null", "nullptr", "malloc", "free(", "select *", "insert into", "group by",
        "order by", "#!/bin/", "sudo", "git", "npm", "cargo", "pip install", "docker", "kubectl", "lambda",
        "goroutine*", "mutex", "arc::", "tokio", "python", "rust", "java", "golang", "c++", "typescript",
        "javascript", "sql", "bash", "kotlin", "swift", "haskell",
    ]},
    CueList { feature: F::StackTrace, scope: Scope::Conversation, patterns: &[
        "traceback", "most recent call last", "panicked at", "exception in thread", "error[", "segmentation fault",
        "segfault", "core dumped", "nullpointerexception", "stack trace", "stacktrace", "backtrace",
        "undefined reference", "exit code", "exit status", "oomkilled", "crashloopbackoff", "outofmemoryerror",
        "keyerror", "typeerror", "valueerror", "attributeerror", "indexerror", "runtimewarning", "syntaxerror",
        "referenceerror", "uncaught", "fatal error", "errno", "sigsegv", "sigkill",
    ]},
    CueList { feature: F::Latex, scope: Scope::Conversation, patterns: &[
        "\\frac", "\\int", "\\sum", "\\sqrt", "\\lim", "\\begin{", "\\mathbb", "\\infty", "\\partial", "\\cdot",
        "\\alpha", "\\beta", "\\theta", "\\lambda", "\\sigma", "\\pi", "\\le", "\\ge", "\\neq", "\\to", "$$",
    ]},
    CueList { feature: F::MathWords, scope: Scope::Conversation, patterns: &[
        "integral", "integrate", "derivative", "differentiat*", "equation*", "eigen*", "probability", "probabilities",
        "expected value", "expected number", "variance", "matrix", "matrices", "limit of", "recurrence", "solve for",
        "solutions of", "real solutions", "converge*", "diverge*", "polynomial*", "inflection", "minimize",
        "maximize", "lagrange", "combinatori*", "permutation*", "how many ways", "modulo", "remainder", "geometric",
        "arithmetic sequence", "logarithm*", "series", "factorial", "optimization", "calculus", "linear algebra",
        "vector", "infinity", "积分", "导数", "微分", "方程", "概率", "矩阵", "极限", "特征值", "特征向量", "数列", "通项", "极值", "单调", "求解",
        "收敛", "发散", "期望", "方差", "函数", "级数", "最大值", "最小值", "几何", "除以", "余数", "排列", "组合", "解方程", "递推",
    ]},
    CueList { feature: F::Proof, scope: Scope::Conversation, patterns: &[
        "prove", "proves", "proof", "show that", "theorem", "lemma", "corollary", "by induction", "induction",
        "counterexample", "irrational", "undecidable", "if and only if", "iff", "qed", "contradiction", "证明", "求证",
        "归纳法", "定理", "反证", "引理", "充分必要", "充要条件",
    ]},
    CueList { feature: F::Reasoning, scope: Scope::Conversation, patterns: &[
        "why", "step by step", "step-by-step", "explain how", "explain why", "explain each", "show the working",
        "show your work", "show your assumptions", "reasoning", "walk through", "walk me through", "in detail",
        "derive", "derivation", "how does", "what causes", "what would", "what happens", "how would you",
        "how should", "root cause", "estimate", "justify", "为什么", "原因", "推导", "详细", "步骤", "一步步", "过程", "原理", "怎么回事",
        "如何", "说明", "解释", "怎么做", "怎么实现", "怎么解决", "怎么办",
    ]},
    CueList { feature: F::Compare, scope: Scope::Conversation, patterns: &[
        "compare", "comparing", "comparison", "trade-off", "trade-offs", "tradeoff*", "pros and cons", "versus", "vs",
        "vs.", "weigh", "better than", "or should", "which is better", "options", "alternatives", "比较", "对比", "优缺点",
        "权衡", "区别", "异同", "哪个更", "利弊", "选哪个", "怎么选",
    ]},
    CueList { feature: F::Analysis, scope: Scope::Conversation, patterns: &[
        "analy*", "evaluate", "assess*", "critique", "critically", "implication*", "impact", "investigate",
        "interpret", "consequence*", "evidence", "argument", "factors", "perspective", "explanations", "分析", "评估",
        "评价", "影响", "角度", "因素", "论证", "看待", "利害", "解读", "瓶颈",
    ]},
    CueList { feature: F::Design, scope: Scope::Conversation, patterns: &[
        "design", "architect*", "system design", "scalab*", "scale", "distributed", "microservice*", "schema",
        "high availability", "throughput", "latency", "replicat*", "sharding", "shard*", "partition*", "consisten*",
        "idempoten*", "failover", "fault toleran*", "exactly-once", "load balanc*", "multi-tenant", "event-sourc*",
        "crdt", "consensus", "queue", "cache", "caching", "writes/s", "reads/s", "qps", "设计", "架构", "分布式", "高并发",
        "高可用", "一致性", "分库分表", "微服务", "秒杀", "集群", "容灾", "负载均衡", "消息队列", "缓存", "吞吐", "并发", "扩展性", "幂等", "限流", "多租户",
    ]},
    CueList { feature: F::CodeTask, scope: Scope::Conversation, patterns: &[
        "write a function", "write a program", "write a script", "write a bash", "write a python", "write a sql",
        "write a parser", "write a query", "write code", "code a", "implement*", "refactor*", "algorithm*",
        "function", "data structure", "regex", "regular expression", "o(1)", "o(n)", "o(n^2)", "o(log n)",
        "time complexity", "thread-safe", "lock-free", "concurren*", "async", "parser", "api", "middleware", "kernel",
        "unit test*", "with tests", "class", "module", "library", "compile*", "实现", "编写", "写一个", "写个", "代码", "函数",
        "算法", "复杂度", "正则", "数据结构", "线程安全", "无锁", "并发", "异步", "接口", "爬虫", "脚本", "遍历", "排序", "程序",
    ]},
    CueList { feature: F::Debug, scope: Scope::Conversation, patterns: &[
        "bug", "bugs", "debug*", "deadlock*", "crash*", "leak*", "error", "errors", "exception", "fails", "failing",
        "failure*", "broken", "hangs", "race condition", "timeout*", "why does my", "doesn't work", "does not work",
        "not working", "no idea why", "slow", "regress*", "re-render*", "never runs", "investigate", "p99", "spike*",
        "off-by-one", "what's wrong", "fix this", "how do i fix", "报错", "死锁", "崩溃", "泄漏", "泄露", "调试", "排查", "异常",
        "卡住", "卡死", "慢", "飙", "bug", "错误", "失败", "超时", "怎么修", "定位", "为什么会",
    ]},
    CueList { feature: F::Legal, scope: Scope::Conversation, patterns: &[
        "contract", "contracts", "liabilit*", "liable", "clause", "clauses", "lawsuit", "sue", "statute", "gdpr",
        "complian*", "indemni*", "enforceab*", "non-compete", "tenant", "landlord", "licens*", "terminate",
        "termination", "damages", "breach", "lawyer", "legal", "jurisdiction", "force majeure", "copyright", "patent",
        "trademark", "court", "regulation", "rights", "gpl*", "agreement", "合同", "违约", "法律", "诉讼", "起诉", "条款", "维权",
        "赔偿", "仲裁", "劳动法", "侵权", "责任", "法院", "律师", "权利", "协议", "借条", "证据", "补偿", "抗辩", "知识产权",
    ]},
    CueList { feature: F::Medical, scope: Scope::Conversation, patterns: &[
        "diagnos*", "dosage", "dose", "doses", "symptom*", "treatment", "mg", "interaction*", "contraindicat*",
        "patient", "patients", "prescri*", "chronic", "disease", "infection", "kidney", "liver", "heart failure",
        "blood pressure", "pregnan*", "pediatric", "differential", "workup", "inhibitor*", "antibiotic*", "fever",
        "rash", "doctor", "诊断", "剂量", "症状", "治疗", "患者", "病史", "副作用", "检查", "孕", "药", "发烧", "胸痛", "血压", "糖尿病", "穿刺",
        "随访", "失眠", "医生", "肾功能", "手术",
    ]},
    CueList { feature: F::Financial, scope: Scope::Conversation, patterns: &[
        "tax", "taxes", "taxation", "portfolio", "invest*", "valuation", "dcf", "npv", "irr", "wacc", "mortgage",
        "runway", "hedg*", "retirement", "401k", "amortiz*", "cash flow", "cash-flow", "break-even", "interest rate",
        "equity", "bonds", "index fund*", "risk parity", "savings", "roi", "revenue", "margin", "budget", "pricing",
        "churn", "税", "投资", "估值", "资产配置", "理财", "房贷", "收益", "风险", "现金流", "基金", "利率", "通胀", "营收", "盈亏", "成本", "预算",
        "股票", "定投",
    ]},
    CueList { feature: F::Planning, scope: Scope::Conversation, patterns: &[
        "plan", "plans", "planning", "roadmap", "strategy", "schedule", "milestone*", "phases", "rollout", "roll out",
        "migrat*", "week-by-week", "week by week", "timeline", "runbook", "study plan", "training plan", "step plan",
        "outline", "structure the", "lay out", "规划", "计划", "方案", "策略", "路线图", "阶段", "迁移", "安排", "行程", "大纲", "计划书",
        "路线",
    ]},
    CueList { feature: F::Constraints, scope: Scope::Conversation, patterns: &[
        "must", "should not", "without", "requirement*", "considering", "consider", "at least", "at most", "under ",
        "including", "include", "make sure", "ensure", "handle", "handles", "cover", "while still", "要求", "考虑", "并且",
        "同时", "不能", "保证", "包括", "处理", "确保", "限制", "支持",
    ]},
    CueList { feature: F::Greeting, scope: Scope::LastTurn, patterns: &[
        "hi", "hello", "hey", "yo", "hiya", "howdy", "thanks", "thank you", "thx", "ty", "good morning",
        "good afternoon", "good evening", "good night", "bye", "goodbye", "see you", "ok", "okay", "cool", "got it",
        "你好", "您好", "谢谢", "多谢", "早上好", "下午好", "晚上好", "晚安", "再见", "拜拜", "嗨", "在吗", "收到", "好的", "明白了", "哈喽",
    ]},
    CueList { feature: F::SmallTalk, scope: Scope::LastTurn, patterns: &[
        "how are you", "your name", "who are you", "are you a", "joke", "bored", "favorite", "favourite",
        "do you like", "fun fact", "recommend a movie", "recommend a", "say something", "chat with me", "just saying",
        "what's up", "你是谁", "笑话", "名字", "无聊", "聊天", "聊聊", "推荐一部", "你喜欢", "你会",
    ]},
    CueList { feature: F::Lookup, scope: Scope::LastTurn, patterns: &[
        "what is the capital", "capital of", "who wrote", "who painted", "who is", "who was", "who invented",
        "who discovered", "who designed", "who proved", "who created", "when did", "when was", "what year",
        "which year", "how many", "how long is", "how tall", "stand for", "which planet", "which ocean",
        "what currency", "what language", "what time", "what's the population", "population of",
        "which programming language", "what is the", "what's the", "首都", "是谁", "哪一年", "哪个朝代", "哪座", "哪里", "多少", "几",
        "是什么", "叫什么", "谁发明", "谁设计", "谁证明", "有多长", "原名", "缩写",
    ]},
    CueList { feature: F::Translate, scope: Scope::Conversation, patterns: &[
        "translate", "translation", "how do you say", "how do i say", "in spanish", "in french", "in german",
        "in japanese", "in italian", "in korean", "in chinese", "into english", "into french", "into german",
        "into spanish", "into chinese", "into japanese", "into italian", "to english", "to french", "to korean", "翻译",
        "译成", "怎么说", "用英语", "用日语", "英文", "英语", "日语", "法语", "中文",
    ]},
    CueList { feature: F::Classify, scope: Scope::Conversation, patterns: &[
        "sentiment", "positive or negative", "positive/neutral/negative", "positive, negative", "classify",
        "classification", "categor*", "label", "label each", "spam", "tone", "which category", "is this positive",
        "rate the sentiment", "情感", "情绪", "分类", "正面", "负面", "好评", "差评", "类别", "诈骗", "积极", "消极", "属于哪", "是不是",
    ]},
    CueList { feature: F::Rewrite, scope: Scope::Conversation, patterns: &[
        "grammar", "rephrase", "reword", "paraphrase", "polite", "more polite", "synonym*", "spelling", "capitalize",
        "shorten", "summarize", "summarise", "summary", "tl;dr", "title for", "bullet list", "proofread", "改写", "润色",
        "错别字", "近义词", "同义词", "总结", "标题", "礼貌", "书面语", "排序", "缩写成", "改一下",
    ]},
    CueList { feature: F::Brief, scope: Scope::Conversation, patterns: &[
        "one word", "one sentence", "briefly", "short answer", "just the", "only output", "output only", "yes or no",
        "concise", "concisely", "exactly one", "in a word", "under 10 words", "one-liner", "一句话", "简短", "只回答", "只输出",
        "一个词", "简洁", "简单说",
    ]},
    CueList { feature: F::Definition, scope: Scope::LastTurn, patterns: &[
        "what does", "meaning of", "define", "definition", "what is a", "what's a", "what is an", "mean?", "什么意思",
        "是什么意思", "定义", "什么是", "意思",
    ]},
];
