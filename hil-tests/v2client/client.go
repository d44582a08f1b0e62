// Package v2client is a small Open Inference Protocol (KServe v2) client for
// REST (JSON tensors or Triton's binary tensor extension) and gRPC. The
// agent's integration tests and the `edgefleet bench` load generator use it;
// it works against any v2 server (Triton, KServe, edgefleet).
package v2client

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/edgefleet/edgefleet/agent/grpcapi"
	"github.com/edgefleet/edgefleet/agent/grpcapi/inferencepb"
	"github.com/edgefleet/edgefleet/agent/models"
	"github.com/edgefleet/edgefleet/agent/tensor"
)

// HeaderContentLength is Triton's binary extension header.
const HeaderContentLength = "Inference-Header-Content-Length"

// StatusError is a non-2xx REST answer.
type StatusError struct {
	Code    int
	Message string
}

func (e *StatusError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.Code, e.Message) }

// REST talks to a v2 REST endpoint such as http://127.0.0.1:8080.
type REST struct {
	Base string
	HTTP *http.Client
}

// NewREST returns a REST client; hc nil means a client with keep-alive pooling.
func NewREST(base string, hc *http.Client) *REST {
	if hc == nil {
		hc = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true}}
	}
	return &REST{Base: base, HTTP: hc}
}

// NewUnixREST returns a REST client that reaches the server over the unix
// socket at path (the agent's --unix listener); URLs use the host "unix".
func NewUnixREST(path string) *REST {
	tr := &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}}
	return &REST{Base: "http://unix", HTTP: &http.Client{Transport: tr}}
}

// InferURL returns the infer URL of a model version ("" = default).
func (c *REST) InferURL(model, version string) string {
	u := c.Base + "/v2/models/" + url.PathEscape(model)
	if version != "" {
		u += "/versions/" + url.PathEscape(version)
	}
	return u + "/infer"
}

// Infer sends req as JSON tensors (binary=false) or with every input and
// output in binary form (binary=true) and decodes the answer.
func (c *REST) Infer(ctx context.Context, model, version string, req *models.InferRequest, binaryData bool) (*models.InferResponse, error) {
	var body []byte
	var hdrLen int
	var err error
	if binaryData {
		body, hdrLen, err = EncodeBinaryRequest(req)
	} else {
		body, err = EncodeJSONRequest(req)
	}
	if err != nil {
		return nil, err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.InferURL(model, version), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if binaryData {
		hreq.Header.Set(HeaderContentLength, strconv.Itoa(hdrLen))
		hreq.Header.Set("Content-Type", "application/octet-stream")
	} else {
		hreq.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.HTTP.Do(hreq)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(rb, &e)
		return nil, &StatusError{Code: resp.StatusCode, Message: e.Error}
	}
	hl := len(rb)
	if h := resp.Header.Get(HeaderContentLength); h != "" {
		if hl, err = strconv.Atoi(h); err != nil || hl < 0 || hl > len(rb) {
			return nil, fmt.Errorf("bad %s %q", HeaderContentLength, h)
		}
	}
	return DecodeResponse(rb[:hl], rb[hl:])
}

type jsonTensor struct {
	Name       string          `json:"name"`
	Datatype   string          `json:"datatype"`
	Shape      []int64         `json:"shape"`
	Parameters map[string]any  `json:"parameters,omitempty"`
	Data       json.RawMessage `json:"data,omitempty"`
}

type jsonOutputReq struct {
	Name       string         `json:"name"`
	Parameters map[string]any `json:"parameters,omitempty"`
}

type jsonRequest struct {
	ID         string          `json:"id,omitempty"`
	Parameters map[string]any  `json:"parameters,omitempty"`
	Inputs     []jsonTensor    `json:"inputs"`
	Outputs    []jsonOutputReq `json:"outputs,omitempty"`
}

// EncodeJSONRequest encodes req with JSON tensor data.
func EncodeJSONRequest(req *models.InferRequest) ([]byte, error) {
	jr := jsonRequest{ID: req.ID}
	for _, t := range req.Inputs {
		d, err := DataJSON(&t)
		if err != nil {
			return nil, err
		}
		jr.Inputs = append(jr.Inputs, jsonTensor{Name: t.Name, Datatype: t.DType.String(), Shape: shapeOf(t.Shape), Data: d})
	}
	for _, o := range req.Outputs {
		jr.Outputs = append(jr.Outputs, jsonOutputReq{Name: o})
	}
	return json.Marshal(jr)
}

// EncodeBinaryRequest encodes req with every input as binary data and asks
// for binary outputs; it returns the body and the JSON header's length.
func EncodeBinaryRequest(req *models.InferRequest) ([]byte, int, error) {
	jr := jsonRequest{ID: req.ID, Parameters: map[string]any{"binary_data_output": true}}
	var blobs [][]byte
	for _, t := range req.Inputs {
		raw := t.Data
		if t.DType == tensor.Bytes {
			raw = nil
			for _, s := range t.Strings {
				raw = binary.LittleEndian.AppendUint32(raw, uint32(len(s)))
				raw = append(raw, s...)
			}
		}
		blobs = append(blobs, raw)
		jr.Inputs = append(jr.Inputs, jsonTensor{Name: t.Name, Datatype: t.DType.String(), Shape: shapeOf(t.Shape),
			Parameters: map[string]any{"binary_data_size": len(raw)}})
	}
	for _, o := range req.Outputs {
		jr.Outputs = append(jr.Outputs, jsonOutputReq{Name: o, Parameters: map[string]any{"binary_data": true}})
	}
	hdr, err := json.Marshal(jr)
	if err != nil {
		return nil, 0, err
	}
	body := hdr
	for _, b := range blobs {
		body = append(body, b...)
	}
	return body, len(hdr), nil
}

func shapeOf(s []int64) []int64 {
	if s == nil {
		return []int64{}
	}
	return s
}

// DataJSON renders a tensor's elements as a flat JSON array.
func DataJSON(t *tensor.Tensor) ([]byte, error) {
	n := int(t.NumElements())
	b := make([]byte, 0, 8*n+2)
	b = append(b, '[')
	for i := 0; i < n; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		d := t.Data
		switch t.DType {
		case tensor.Bool:
			b = strconv.AppendBool(b, d[i] != 0)
		case tensor.Uint8:
			b = strconv.AppendUint(b, uint64(d[i]), 10)
		case tensor.Int8:
			b = strconv.AppendInt(b, int64(int8(d[i])), 10)
		case tensor.Uint16:
			b = strconv.AppendUint(b, uint64(binary.LittleEndian.Uint16(d[2*i:])), 10)
		case tensor.Int16:
			b = strconv.AppendInt(b, int64(int16(binary.LittleEndian.Uint16(d[2*i:]))), 10)
		case tensor.Uint32:
			b = strconv.AppendUint(b, uint64(binary.LittleEndian.Uint32(d[4*i:])), 10)
		case tensor.Int32:
			b = strconv.AppendInt(b, int64(int32(binary.LittleEndian.Uint32(d[4*i:]))), 10)
		case tensor.Uint64:
			b = strconv.AppendUint(b, binary.LittleEndian.Uint64(d[8*i:]), 10)
		case tensor.Int64:
			b = strconv.AppendInt(b, int64(binary.LittleEndian.Uint64(d[8*i:])), 10)
		case tensor.FP32:
			b = strconv.AppendFloat(b, float64(math.Float32frombits(binary.LittleEndian.Uint32(d[4*i:]))), 'g', -1, 32)
		case tensor.FP64:
			b = strconv.AppendFloat(b, math.Float64frombits(binary.LittleEndian.Uint64(d[8*i:])), 'g', -1, 64)
		case tensor.Bytes:
			s, _ := json.Marshal(string(t.Strings[i]))
			b = append(b, s...)
		default:
			return nil, fmt.Errorf("v2client: JSON encoding of %v is not supported; use binary", t.DType)
		}
	}
	return append(b, ']'), nil
}

type jsonResponse struct {
	ModelName    string       `json:"model_name"`
	ModelVersion string       `json:"model_version"`
	ID           string       `json:"id"`
	Outputs      []jsonTensor `json:"outputs"`
}

// DecodeResponse decodes a v2 REST response: its JSON header and the binary
// data that follows it (empty for a pure JSON answer).
func DecodeResponse(header, bin []byte) (*models.InferResponse, error) {
	var jr jsonResponse
	if err := json.Unmarshal(header, &jr); err != nil {
		return nil, fmt.Errorf("decoding response: %w", err)
	}
	out := &models.InferResponse{ModelName: jr.ModelName, ModelVersion: jr.ModelVersion, ID: jr.ID}
	for _, o := range jr.Outputs {
		dt, err := tensor.ParseDType(o.Datatype)
		if err != nil {
			return nil, err
		}
		t := tensor.Tensor{Name: o.Name, DType: dt, Shape: o.Shape}
		if sz, ok := o.Parameters["binary_data_size"].(float64); ok {
			n := int(sz)
			if n < 0 || n > len(bin) {
				return nil, fmt.Errorf("output %q: binary_data_size %d exceeds the %d bytes left", o.Name, n, len(bin))
			}
			raw := bin[:n]
			bin = bin[n:]
			if dt == tensor.Bytes {
				for len(raw) >= 4 {
					l := int(binary.LittleEndian.Uint32(raw))
					if l > len(raw)-4 {
						return nil, fmt.Errorf("output %q: truncated BYTES element", o.Name)
					}
					t.Strings = append(t.Strings, raw[4:4+l])
					raw = raw[4+l:]
				}
			} else {
				t.Data = raw
			}
		} else if err := parseData(&t, o.Data); err != nil {
			return nil, fmt.Errorf("output %q: %w", o.Name, err)
		}
		if err := t.Validate(); err != nil {
			return nil, err
		}
		out.Outputs = append(out.Outputs, t)
	}
	return out, nil
}

func parseData(t *tensor.Tensor, data json.RawMessage) error {
	switch t.DType {
	case tensor.Bool:
		var v []bool
		if err := json.Unmarshal(data, &v); err != nil {
			return err
		}
		for _, x := range v {
			t.Data = append(t.Data, b2u(x))
		}
		return nil
	case tensor.Bytes:
		var v []string
		if err := json.Unmarshal(data, &v); err != nil {
			return err
		}
		for _, s := range v {
			t.Strings = append(t.Strings, []byte(s))
		}
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v []json.Number
	if err := dec.Decode(&v); err != nil {
		return err
	}
	for _, num := range v {
		s := string(num)
		var err error
		switch t.DType {
		case tensor.FP32:
			var f float64
			f, err = strconv.ParseFloat(s, 32)
			t.Data = binary.LittleEndian.AppendUint32(t.Data, math.Float32bits(float32(f)))
		case tensor.FP64:
			var f float64
			f, err = strconv.ParseFloat(s, 64)
			t.Data = binary.LittleEndian.AppendUint64(t.Data, math.Float64bits(f))
		case tensor.Int8, tensor.Int16, tensor.Int32, tensor.Int64:
			var x int64
			x, err = strconv.ParseInt(s, 10, 8*t.DType.Size())
			t.Data = appendLE(t.Data, uint64(x), t.DType.Size())
		case tensor.Uint8, tensor.Uint16, tensor.Uint32, tensor.Uint64:
			var x uint64
			x, err = strconv.ParseUint(s, 10, 8*t.DType.Size())
			t.Data = appendLE(t.Data, x, t.DType.Size())
		default:
			return fmt.Errorf("v2client: JSON decoding of %v is not supported", t.DType)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// appendLE appends the low size bytes of x, little-endian.
func appendLE(b []byte, x uint64, size int) []byte {
	var buf [8]byte
	binary.LittleEndian.PutUint64(buf[:], x)
	return append(b, buf[:size]...)
}

func b2u(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// GRPC talks to a v2 gRPC endpoint.
type GRPC struct {
	Conn   *grpc.ClientConn
	Client inferencepb.GRPCInferenceServiceClient
}

// DialGRPC connects (lazily, without TLS) to addr.
func DialGRPC(addr string) (*GRPC, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30), grpc.MaxCallSendMsgSize(1<<30)))
	if err != nil {
		return nil, err
	}
	return &GRPC{Conn: conn, Client: inferencepb.NewGRPCInferenceServiceClient(conn)}, nil
}

// Close closes the connection.
func (c *GRPC) Close() error { return c.Conn.Close() }

// Infer sends req with raw_input_contents (raw=true) or typed contents.
func (c *GRPC) Infer(ctx context.Context, model, version string, req *models.InferRequest, raw bool) (*models.InferResponse, error) {
	pr, err := grpcapi.NewInferRequest(model, version, req, raw)
	if err != nil {
		return nil, err
	}
	resp, err := c.Client.ModelInfer(ctx, pr)
	if err != nil {
		return nil, err
	}
	return grpcapi.DecodeOutputs(resp)
}
