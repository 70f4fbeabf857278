//! The operator types a `model.onnx` uses, read from the file's protobuf without loading its weights.
//!
//! ONNX Runtime's session shows a graph's inputs and outputs but not its nodes, and two exports with the
//! same input names can need different callers: onnxruntime-genai's `GroupQueryAttention` graph takes
//! the same `attention_mask` and `past_key_values.*` as an Optimum export but reads only each row's
//! *count* of attended positions (`seqlens_k = ReduceSum(attention_mask) - 1`), so it needs rows
//! right-padded where Optimum's graph allows left padding. This module walks `ModelProto.graph.node`
//! (field 7, then field 1) and collects each node's `domain` and `op_type`, seeking past everything
//! else (initializers may be gigabytes). Subgraphs inside attributes are not visited.

use std::collections::BTreeSet;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

/// `ModelProto.graph`.
const MODEL_GRAPH: u64 = 7;
/// `GraphProto.node`.
const GRAPH_NODE: u64 = 1;
/// `NodeProto.op_type`.
const NODE_OP_TYPE: u64 = 4;
/// `NodeProto.domain`.
const NODE_DOMAIN: u64 = 7;
/// A node message larger than this is not an operator we need to name (a `Constant` holding a
/// tensor): it is skipped rather than read.
const MAX_NODE_BYTES: u64 = 1 << 20;

/// `(domain, op_type)` of every top-level node; the default domain is `""`.
pub(crate) type OpSet = BTreeSet<(String, String)>;

/// Reads the operator set of the ONNX file at `path`.
pub(crate) fn read(path: &Path) -> io::Result<OpSet> {
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut r = BufReader::new(file);
    let mut ops = OpSet::new();
    while r.stream_position()? < len {
        let (field, wire) = key(&mut r)?;
        if field == MODEL_GRAPH && wire == 2 {
            let size = varint(&mut r)?;
            let end = r.stream_position()? + size;
            if end > len {
                return Err(invalid("graph runs past the end of the file"));
            }
            graph(&mut r, end, &mut ops)?;
        } else {
            skip(&mut r, wire)?;
        }
    }
    Ok(ops)
}

fn graph<R: Read + Seek>(r: &mut R, end: u64, ops: &mut OpSet) -> io::Result<()> {
    while r.stream_position()? < end {
        let (field, wire) = key(r)?;
        if field == GRAPH_NODE && wire == 2 {
            let size = varint(r)?;
            if size > MAX_NODE_BYTES || r.stream_position()? + size > end {
                r.seek(SeekFrom::Current(signed(size)?))?;
                continue;
            }
            let mut node = vec![0; usize::try_from(size).map_err(|_| invalid("node size"))?];
            r.read_exact(&mut node)?;
            ops.insert(node_op(&node)?);
        } else {
            skip(r, wire)?;
        }
    }
    Ok(())
}

fn node_op(bytes: &[u8]) -> io::Result<(String, String)> {
    let mut r = io::Cursor::new(bytes);
    let (mut domain, mut op_type) = (String::new(), String::new());
    while r.position() < bytes.len() as u64 {
        let (field, wire) = key(&mut r)?;
        if wire == 2 && (field == NODE_OP_TYPE || field == NODE_DOMAIN) {
            let size = usize::try_from(varint(&mut r)?).map_err(|_| invalid("string size"))?;
            let mut s = vec![0; size.min(bytes.len())];
            r.read_exact(&mut s)?;
            let s = String::from_utf8(s).map_err(|_| invalid("operator name is not UTF-8"))?;
            if field == NODE_OP_TYPE {
                op_type = s;
            } else {
                domain = s;
            }
        } else {
            skip(&mut r, wire)?;
        }
    }
    Ok((domain, op_type))
}

fn key<R: Read>(r: &mut R) -> io::Result<(u64, u8)> {
    let k = varint(r)?;
    Ok((k >> 3, (k & 7) as u8))
}

fn varint<R: Read>(r: &mut R) -> io::Result<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let mut byte = [0u8];
        r.read_exact(&mut byte)?;
        value |= u64::from(byte[0] & 0x7f) << shift;
        if byte[0] & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(invalid("varint longer than 10 bytes"))
}

fn skip<R: Read + Seek>(r: &mut R, wire: u8) -> io::Result<()> {
    match wire {
        0 => varint(r).map(drop),
        1 => r.seek(SeekFrom::Current(8)).map(drop),
        2 => {
            let size = varint(r)?;
            r.seek(SeekFrom::Current(signed(size)?)).map(drop)
        }
        5 => r.seek(SeekFrom::Current(4)).map(drop),
        other => Err(invalid(&format!("protobuf wire type {other}"))),
    }
}

fn signed(size: u64) -> io::Result<i64> {
    i64::try_from(size).map_err(|_| invalid("length out of range"))
}

fn invalid(reason: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("not an ONNX model: {reason}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn field(number: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, number << 3 | 2);
        put_varint(&mut out, payload.len() as u64);
        out.extend_from_slice(payload);
        out
    }

    fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn node(domain: &str, op: &str) -> Vec<u8> {
        let mut n = field(1, b"x");
        n.extend(field(NODE_OP_TYPE, op.as_bytes()));
        if !domain.is_empty() {
            n.extend(field(NODE_DOMAIN, domain.as_bytes()));
        }
        n
    }

    #[test]
    fn finds_node_operators_and_skips_the_rest() {
        let mut graph = field(GRAPH_NODE, &node("", "MatMul"));
        graph.extend(field(5, &vec![7u8; 5000])); // an initializer
        graph.extend(field(GRAPH_NODE, &node("com.microsoft", "GroupQueryAttention")));
        let mut model = vec![0x08, 0x0a]; // ir_version = 10 (varint field 1)
        model.extend(field(2, b"onnxruntime-genai")); // producer_name
        model.extend(field(MODEL_GRAPH, &graph));
        model.extend(field(8, &field(1, b"com.microsoft"))); // opset_import
        let dir = std::env::temp_dir().join(format!("r1-edge-ops-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("model.onnx");
        std::fs::write(&path, &model).unwrap();
        let ops = read(&path).unwrap();
        assert_eq!(
            ops.into_iter().collect::<Vec<_>>(),
            vec![
                (String::new(), "MatMul".to_owned()),
                ("com.microsoft".to_owned(), "GroupQueryAttention".to_owned())
            ]
        );
        // Truncated: an error, never a panic.
        std::fs::write(&path, &model[..model.len() / 2]).unwrap();
        assert!(read(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
