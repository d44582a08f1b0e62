package loadgen

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/edgefleet/edgefleet/agent/grpcapi"
	"github.com/edgefleet/edgefleet/agent/models"
	"github.com/edgefleet/edgefleet/hil-tests/v2client"
)

// RESTTarget posts a pre-encoded request (JSON tensors, or binary tensors
// when binary is set) and checks for 200 and a non-empty body.
func RESTTarget(c *v2client.REST, model, version string, req *models.InferRequest, binary bool) (Target, error) {
	var body []byte
	var hdrLen int
	var err error
	if binary {
		body, hdrLen, err = v2client.EncodeBinaryRequest(req)
	} else {
		body, err = v2client.EncodeJSONRequest(req)
	}
	if err != nil {
		return nil, err
	}
	url := c.InferURL(model, version)
	hl := strconv.Itoa(hdrLen)
	return func(ctx context.Context) error {
		hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		if binary {
			hreq.Header.Set(v2client.HeaderContentLength, hl)
		}
		resp, err := c.HTTP.Do(hreq)
		if err != nil {
			return err
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || n == 0 {
			return fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		return nil
	}, nil
}

// GRPCTarget sends a pre-built ModelInfer request (raw contents when raw).
func GRPCTarget(c *v2client.GRPC, model, version string, req *models.InferRequest, raw bool) (Target, error) {
	pr, err := grpcapi.NewInferRequest(model, version, req, raw)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) error {
		resp, err := c.Client.ModelInfer(ctx, pr)
		if err != nil {
			return err
		}
		if len(resp.GetOutputs()) == 0 {
			return fmt.Errorf("no outputs")
		}
		return nil
	}, nil
}
