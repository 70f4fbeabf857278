//! The batching property shared by the engine tests: a row's greedy tokens do not depend on which
//! other rows share its batch, when they joined, or who left.

use r1_edge::engine::{Engine, KvBatch};
use r1_edge::sampling::{Sampler, SamplingParams};
use r1_edge::text::TextCodec;
use r1_proto::ChatMessage;

/// Eight prompts of different lengths.
pub(crate) const QUESTIONS: [&str; 8] = [
    crate::questions::QUESTIONS[0],
    crate::questions::QUESTIONS[1],
    crate::questions::QUESTIONS[2],
    crate::questions::QUESTIONS[3],
    crate::questions::QUESTIONS[4],
    crate::questions::QUESTIONS[5],
    crate::questions::QUESTIONS[6],
    crate::questions::QUESTIONS[7],
];

pub(crate) fn prompts(text: &TextCodec) -> Vec<Vec<u32>> {
    QUESTIONS
        .iter()
        .map(|q| {
            text.encode(&text.render_chat(&[ChatMessage::user(*q)]).unwrap())
                .unwrap()
        })
        .collect()
}

pub(crate) fn greedy(logits: &[f32]) -> u32 {
    Sampler::new(SamplingParams::GREEDY).sample(logits).token
}

/// Each prompt alone: prefill, then `steps` decode steps.
pub(crate) fn alone(engine: &mut Engine, prompt: &[u32], steps: usize) -> Vec<u32> {
    let (mut batch, logits) = engine.prefill(&[prompt]).unwrap();
    let mut out = vec![greedy(logits.row(0))];
    for step in 0..steps {
        let pos = (prompt.len() + step) as i64;
        let logits = engine.decode(&mut batch, &[*out.last().unwrap()], &[pos]).unwrap();
        out.push(greedy(logits.row(0)));
    }
    out
}

struct Row {
    prompt_len: usize,
    out: Vec<u32>,
    want: usize,
}

/// Rows join in three groups and leave as they finish; every row's greedy tokens must equal that
/// prompt's run alone.
pub(crate) fn batched_matches_unbatched(engine: &mut Engine, text: &TextCodec) {
    let prompts = prompts(text);
    let lens: Vec<usize> = prompts.iter().map(Vec::len).collect();
    assert!(
        lens.iter().collect::<std::collections::HashSet<_>>().len() >= 5,
        "prompts of different lengths: {lens:?}"
    );

    let steps = |i: usize| 6 + 3 * i; // different lengths, so rows leave at different steps
    let expected: Vec<Vec<u32>> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| alone(engine, p, steps(i)))
        .collect();

    // Rows 0..3 start together; 3..6 join after 2 steps; 6..8 after 5 steps; finished rows leave.
    let joins = [(0usize, 0..3usize), (2, 3..6), (5, 6..8)];
    let mut batch: Option<KvBatch> = None;
    let mut rows: Vec<(usize, Row)> = Vec::new();
    let mut done: Vec<(usize, Vec<u32>)> = Vec::new();
    for step in 0.. {
        for (at, range) in joins.iter().cloned() {
            if at == step {
                let group: Vec<&[u32]> = range.clone().map(|i| prompts[i].as_slice()).collect();
                let (joined, logits) = engine.prefill(&group).unwrap();
                for (k, i) in range.enumerate() {
                    rows.push((
                        i,
                        Row {
                            prompt_len: prompts[i].len(),
                            out: vec![greedy(logits.row(k))],
                            want: steps(i) + 1,
                        },
                    ));
                }
                batch = Some(match batch.take() {
                    Some(b) => engine.merge(b, joined).unwrap(),
                    None => joined,
                });
            }
        }
        if rows.is_empty() {
            break;
        }
        let b = batch.as_mut().unwrap();
        let tokens: Vec<u32> = rows.iter().map(|(_, r)| *r.out.last().unwrap()).collect();
        let positions: Vec<i64> = rows
            .iter()
            .map(|(_, r)| (r.prompt_len + r.out.len() - 1) as i64)
            .collect();
        let logits = engine.decode(b, &tokens, &positions).unwrap();
        for (k, (_, r)) in rows.iter_mut().enumerate() {
            r.out.push(greedy(logits.row(k)));
        }
        let keep: Vec<bool> = rows.iter().map(|(_, r)| r.out.len() < r.want).collect();
        for (i, r) in rows.iter().filter(|(_, r)| r.out.len() >= r.want) {
            done.push((*i, r.out.clone()));
        }
        batch = Some(engine.retain(batch.take().unwrap(), &keep).unwrap());
        rows.retain(|(_, r)| r.out.len() < r.want);
        assert_eq!(batch.as_ref().unwrap().rows(), rows.len());
        if rows.is_empty() && step >= 5 {
            break;
        }
    }
    done.sort_by_key(|(i, _)| *i);
    assert_eq!(done.len(), prompts.len());
    for (i, out) in done {
        assert_eq!(out, expected[i], "prompt {i} ({:?}) batched vs alone", QUESTIONS[i]);
    }
}
