//! The server's request and response shapes: KServe's V1 protocol (`instances` ->
//! `predictions`) and the Open Inference Protocol (V2: typed tensors), both mapped onto the same
//! queries. Every refusal is an `ApiError`: a 4xx status and a message naming the field.

use serde_json::{json, Value};

use super::model::{Answer, Query, ServedModel, Subject};

/// A refused request: HTTP status and a message that names the offending field.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(400, message)
    }
    pub fn body(&self) -> Value {
        json!({ "error": self.message })
    }
}

/// Request-wide options shared by both protocols.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_top_k: usize,
    pub max_instances: usize,
}

/// Query options of one instance (V1) or of the request's `parameters` (V2).
#[derive(Clone, Copy)]
struct Options {
    top_k: usize,
    include_known: bool,
    exact: bool,
    want_embedding: bool,
}

fn options(
    obj: Option<&serde_json::Map<String, Value>>,
    at: &str,
    limits: &Limits,
) -> Result<Options, ApiError> {
    let get = |k: &str| obj.and_then(|o| o.get(k));
    let top_k = match get("top_k") {
        None => 10,
        Some(v) => {
            let k = v.as_u64().ok_or_else(|| {
                ApiError::bad(format!("{at}top_k: expected a positive integer, got {v}"))
            })?;
            if k == 0 || k as usize > limits.max_top_k {
                return Err(ApiError::bad(format!(
                    "{at}top_k: {k} is outside 1..={}",
                    limits.max_top_k
                )));
            }
            k as usize
        }
    };
    let flag = |k: &str| -> Result<bool, ApiError> {
        match get(k) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(ApiError::bad(format!(
                "{at}{k}: expected true or false, got {v}"
            ))),
        }
    };
    Ok(Options {
        top_k,
        include_known: flag("include_known")?,
        exact: flag("exact")?,
        want_embedding: flag("return_embedding")?,
    })
}

fn paper_id(m: &ServedModel, v: &Value, field: &str) -> Result<u32, ApiError> {
    let orig = v.as_u64().ok_or_else(|| {
        ApiError::bad(format!(
            "{field}: expected a paper id (non-negative integer), got {v}"
        ))
    })?;
    m.resolve(orig)
        .ok_or_else(|| ApiError::new(404, format!("{field}: no paper has id {orig}")))
}

/// A new paper's checked feature row and references.
fn new_paper(
    m: &ServedModel,
    features: &[f32],
    refs: &[Value],
    at: &str,
) -> Result<Subject, ApiError> {
    let Some(width) = m.feature_dim() else {
        return Err(ApiError::bad(format!(
            "{at}features: this server embeds no new papers (start it with --data and --checkpoint of a GraphSAGE model)"
        )));
    };
    if features.len() != width {
        return Err(ApiError::bad(format!(
            "{at}features: {} values, the model takes {width}",
            features.len()
        )));
    }
    if let Some(i) = features.iter().position(|x| !x.is_finite()) {
        return Err(ApiError::bad(format!(
            "{at}features[{i}]: not a finite number"
        )));
    }
    let references = refs
        .iter()
        .enumerate()
        .map(|(i, r)| paper_id(m, r, &format!("{at}references[{i}]")))
        .collect::<Result<Vec<u32>, ApiError>>()?;
    Ok(Subject::New {
        features: features.to_vec(),
        references,
    })
}

fn floats(v: &Value, field: &str) -> Result<Vec<f32>, ApiError> {
    let arr = v
        .as_array()
        .ok_or_else(|| ApiError::bad(format!("{field}: expected an array of numbers")))?;
    arr.iter()
        .enumerate()
        .map(|(i, x)| {
            x.as_f64()
                .map(|f| f as f32)
                .ok_or_else(|| ApiError::bad(format!("{field}[{i}]: expected a number, got {x}")))
        })
        .collect()
}

/// V1: `{"instances": [...]}`, each `{"paper": ID, ...}` or `{"features": [...], "references":
/// [IDs], ...}`, options `top_k`, `include_known`, `exact`, `return_embedding` per instance.
pub fn parse_v1(m: &ServedModel, body: &Value, limits: &Limits) -> Result<Vec<Query>, ApiError> {
    let instances = body
        .get("instances")
        .ok_or_else(|| {
            ApiError::bad("instances: missing (V1 requests are {\"instances\": [...]})")
        })?
        .as_array()
        .ok_or_else(|| ApiError::bad("instances: expected an array"))?;
    if instances.is_empty() || instances.len() > limits.max_instances {
        return Err(ApiError::bad(format!(
            "instances: {} instances, 1..={} are taken",
            instances.len(),
            limits.max_instances
        )));
    }
    instances
        .iter()
        .enumerate()
        .map(|(i, inst)| {
            let at = format!("instances[{i}].");
            let obj = inst
                .as_object()
                .ok_or_else(|| ApiError::bad(format!("instances[{i}]: expected an object")))?;
            let opts = options(Some(obj), &at, limits)?;
            let subject = match (obj.get("paper"), obj.get("features")) {
                (Some(p), None) => Subject::Known(paper_id(m, p, &format!("{at}paper"))?),
                (None, Some(f)) => {
                    let features = floats(f, &format!("{at}features"))?;
                    let refs = match obj.get("references") {
                        None => Vec::new(),
                        Some(r) => r
                            .as_array()
                            .ok_or_else(|| ApiError::bad(format!("{at}references: expected an array of paper ids")))?
                            .clone(),
                    };
                    new_paper(m, &features, &refs, &at)?
                }
                (Some(_), Some(_)) => {
                    return Err(ApiError::bad(format!(
                        "{at}paper: give either a paper id or a new paper's features, not both"
                    )))
                }
                (None, None) => {
                    return Err(ApiError::bad(format!(
                        "instances[{i}]: expected \"paper\" (a known id) or \"features\" and \"references\" (a new paper)"
                    )))
                }
            };
            Ok(query(subject, opts))
        })
        .collect()
}

fn query(subject: Subject, o: Options) -> Query {
    Query {
        subject,
        top_k: o.top_k,
        include_known: o.include_known,
        exact: o.exact,
        want_embedding: o.want_embedding,
    }
}

pub fn v1_response(answers: &[Answer], queries: &[Query], m: &ServedModel) -> Value {
    let predictions: Vec<Value> = answers
        .iter()
        .zip(queries)
        .map(|(a, q)| {
            let mut p = json!({
                "paper": match q.subject {
                    Subject::Known(id) => json!(m.orig_ids[id as usize]),
                    Subject::New { .. } => Value::Null,
                },
                "candidates": a.candidates.iter().map(|&(id, s)| json!({"paper": id, "score": s})).collect::<Vec<_>>(),
            });
            if let Some(e) = &a.embedding {
                p["embedding"] = json!(e);
            }
            p
        })
        .collect();
    json!({ "predictions": predictions })
}

/// One input tensor of a V2 request: its shape and flattened data.
struct Tensor<'a> {
    name: String,
    datatype: String,
    shape: Vec<usize>,
    data: Vec<&'a Value>,
}

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(a) => a.iter().for_each(|x| flatten(x, out)),
        x => out.push(x),
    }
}

fn tensors<'a>(body: &'a Value) -> Result<Vec<Tensor<'a>>, ApiError> {
    let inputs = body
        .get("inputs")
        .ok_or_else(|| ApiError::bad("inputs: missing (V2 requests are {\"inputs\": [tensors]})"))?
        .as_array()
        .ok_or_else(|| ApiError::bad("inputs: expected an array of tensors"))?;
    inputs
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let at = format!("inputs[{i}]");
            let s = |k: &str| {
                t.get(k)
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| ApiError::bad(format!("{at}.{k}: expected a string")))
            };
            let name = s("name")?;
            let datatype = s("datatype")?;
            let shape = t
                .get("shape")
                .and_then(Value::as_array)
                .ok_or_else(|| ApiError::bad(format!("{at}.shape: expected an array of sizes")))?
                .iter()
                .map(|d| d.as_u64().map(|d| d as usize))
                .collect::<Option<Vec<usize>>>()
                .ok_or_else(|| {
                    ApiError::bad(format!("{at}.shape: expected non-negative integers"))
                })?;
            let mut data = Vec::new();
            flatten(
                t.get("data")
                    .ok_or_else(|| ApiError::bad(format!("{at}.data: missing")))?,
                &mut data,
            );
            let expect: usize = shape.iter().product();
            if data.len() != expect {
                return Err(ApiError::bad(format!(
                    "{at}.data: {} values for shape {shape:?} ({expect} expected)",
                    data.len()
                )));
            }
            Ok(Tensor {
                name,
                datatype,
                shape,
                data,
            })
        })
        .collect()
}

fn int_types(t: &Tensor) -> Result<(), ApiError> {
    match t.datatype.as_str() {
        "INT64" | "INT32" | "UINT64" | "UINT32" => Ok(()),
        d => Err(ApiError::bad(format!(
            "{}.datatype: {d}, expected INT64 (paper ids)",
            t.name
        ))),
    }
}

/// V2: inputs `paper` (INT64 `[n]`), or `features` (FP32 `[n, F]`) with `references` (INT64
/// `[n, R]`, -1 for no paper); options in `parameters`.
pub fn parse_v2(m: &ServedModel, body: &Value, limits: &Limits) -> Result<Vec<Query>, ApiError> {
    let ts = tensors(body)?;
    let params = body.get("parameters").and_then(Value::as_object);
    if body.get("parameters").is_some() && params.is_none() {
        return Err(ApiError::bad("parameters: expected an object"));
    }
    let find = |n: &str| ts.iter().find(|t| t.name == n);
    if let Some(t) = ts
        .iter()
        .find(|t| !["paper", "features", "references"].contains(&t.name.as_str()))
    {
        return Err(ApiError::bad(format!(
            "inputs: unknown tensor '{}' (expected paper, or features and references)",
            t.name
        )));
    }
    let subjects: Vec<Subject> = match (find("paper"), find("features")) {
        (Some(p), None) => {
            int_types(p)?;
            if p.shape.len() != 1 {
                return Err(ApiError::bad(format!("paper.shape: {:?}, expected [n]", p.shape)));
            }
            p.data
                .iter()
                .enumerate()
                .map(|(i, v)| paper_id(m, v, &format!("paper[{i}]")).map(Subject::Known))
                .collect::<Result<_, _>>()?
        }
        (None, Some(f)) => {
            if f.datatype != "FP32" && f.datatype != "FP64" {
                return Err(ApiError::bad(format!("features.datatype: {}, expected FP32", f.datatype)));
            }
            if f.shape.len() != 2 {
                return Err(ApiError::bad(format!("features.shape: {:?}, expected [n, F]", f.shape)));
            }
            let (n, width) = (f.shape[0], f.shape[1]);
            let refs = find("references");
            if let Some(r) = refs {
                int_types(r)?;
                if r.shape.len() != 2 || r.shape[0] != n {
                    return Err(ApiError::bad(format!(
                        "references.shape: {:?}, expected [{n}, R]",
                        r.shape
                    )));
                }
            }
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                let row: Vec<f32> = f.data[i * width..(i + 1) * width]
                    .iter()
                    .enumerate()
                    .map(|(j, v)| {
                        v.as_f64().map(|x| x as f32).ok_or_else(|| {
                            ApiError::bad(format!("features[{i}][{j}]: expected a number, got {v}"))
                        })
                    })
                    .collect::<Result<_, _>>()?;
                let ids: Vec<Value> = match refs {
                    None => Vec::new(),
                    Some(r) => {
                        let w = r.shape[1];
                        r.data[i * w..(i + 1) * w]
                            .iter()
                            .filter(|v| v.as_i64() != Some(-1))
                            .map(|v| (*v).clone())
                            .collect()
                    }
                };
                out.push(new_paper(m, &row, &ids, &format!("row {i}: "))?);
            }
            out
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::bad(
                "inputs: give either a paper tensor or features and references, not both",
            ))
        }
        (None, None) => {
            return Err(ApiError::bad(
                "inputs: expected a 'paper' tensor (INT64 [n]) or 'features' (FP32 [n, F]) and 'references' (INT64 [n, R])",
            ))
        }
    };
    if subjects.is_empty() || subjects.len() > limits.max_instances {
        return Err(ApiError::bad(format!(
            "inputs: {} queries, 1..={} are taken",
            subjects.len(),
            limits.max_instances
        )));
    }
    let opts = options(params, "parameters.", limits)?;
    Ok(subjects.into_iter().map(|s| query(s, opts)).collect())
}

pub fn v2_response(
    answers: &[Answer],
    queries: &[Query],
    m: &ServedModel,
    id: Option<&Value>,
) -> Value {
    let k = queries.iter().map(|q| q.top_k).max().unwrap_or(0);
    let n = answers.len();
    let mut papers = Vec::with_capacity(n * k);
    let mut scores = Vec::with_capacity(n * k);
    for a in answers {
        for j in 0..k {
            match a.candidates.get(j) {
                Some(&(p, s)) => {
                    papers.push(json!(p));
                    scores.push(json!(s));
                }
                None => {
                    papers.push(json!(-1));
                    scores.push(json!(0.0));
                }
            }
        }
    }
    let mut out = json!({
        "model_name": m.name,
        "model_version": "1",
        "outputs": [
            {"name": "paper", "datatype": "INT64", "shape": [n, k], "data": papers},
            {"name": "score", "datatype": "FP32", "shape": [n, k], "data": scores},
        ],
    });
    if let Some(id) = id {
        out["id"] = id.clone();
    }
    out
}

/// V2 model metadata.
pub fn v2_metadata(m: &ServedModel) -> Value {
    let mut inputs = vec![json!({"name": "paper", "datatype": "INT64", "shape": [-1]})];
    if let Some(f) = m.feature_dim() {
        inputs.push(json!({"name": "features", "datatype": "FP32", "shape": [-1, f]}));
        inputs.push(json!({"name": "references", "datatype": "INT64", "shape": [-1, -1]}));
    }
    json!({
        "name": m.name,
        "versions": ["1"],
        "platform": "shardsage",
        "inputs": inputs,
        "outputs": [
            {"name": "paper", "datatype": "INT64", "shape": [-1, -1]},
            {"name": "score", "datatype": "FP32", "shape": [-1, -1]},
        ],
    })
}
