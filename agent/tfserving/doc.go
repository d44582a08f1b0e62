// Package tfserving serves TensorFlow Serving's REST API (the /v1 endpoints)
// over the agent's models, so TF Serving clients work unchanged.
//
// # Basics
//
// New returns an http.Handler for the paths under /v1/:
//
//	GET  /v1/models/{m}[/versions/{v}|/labels/{l}]             model status
//	GET  /v1/models/{m}[/versions/{v}|/labels/{l}]/metadata    signature of the model
//	POST /v1/models/{m}[/versions/{v}|/labels/{l}]:predict     predict
//
// An ONNX model has one signature, "serving_default", whose inputs and
// outputs are the model's. Predict accepts both of TF Serving's layouts:
//
//   - row: {"instances": [...]}, one element per batch row: a value or nested
//     list for a single-input model, or an object of every named input; the
//     batch dimension is the number of instances. Answered with
//     {"predictions": [...]}: per row, a value for a single output or an
//     object of named outputs.
//   - columnar: {"inputs": ...}, the single input's tensor or an object of
//     named inputs in their natural nested form. Answered with
//     {"outputs": ...}: the single output's tensor or an object of them.
//
// Data types come from the model metadata; shapes are read from the nesting
// (following first elements, then checked to be dense). JSON numbers fill
// numeric inputs with TF Serving's rules: integers only for integer types,
// NaN/Infinity/-Infinity tokens accepted for floats, values that a float or
// double cannot hold exactly refused as lossy. Strings and {"b64": "..."}
// objects fill BYTES (DT_STRING) inputs; b64 is for string tensors only, as
// in TF Serving. Floats are written in their shortest exact form with ".0"
// after whole numbers; BYTES outputs whose name ends in "_bytes" or whose
// content is not UTF-8 are written as {"b64": ...}.
//
// # Errors
//
// Errors answer {"error": "<message>"} with TF Serving's messages where it
// has one: 400 for malformed requests and bad inputs, 404 for unknown models
// and versions ("Servable not found for request: ..."), 400 for unknown
// labels ("Unrecognized servable version label: ..."), 413 for oversized
// bodies, 429/503 when the model is overloaded or unavailable, 501 for
// :classify and :regress.
//
// # Caveats
//
// Versions in paths may be any name without '/' or ':' (TF Serving requires
// digits). Unknown keys in an 'inputs' object are refused (TF Serving
// ignores them). Non-finite floats are written as the bare NaN and Infinity
// tokens, as TF Serving does; strict JSON parsers reject them.
package tfserving
