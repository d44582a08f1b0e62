package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgefleet/edgefleet/ota/wire"
)

// Files the hub writes into its data folder for local administration.
const (
	AdminCertFile = "admin.crt"
	AdminKeyFile  = "admin.key"
	CACertFile    = "ca.crt"
	// APIURLFile holds the API's URL as the hub advertises it.
	APIURLFile = "api.url"
)

// Client calls the hub API.
type Client struct {
	base string
	hc   *http.Client
}

// NewClient returns a client for the API at baseURL
// ("https://127.0.0.1:7443") using tlsCfg (roots and admin certificate).
func NewClient(baseURL string, tlsCfg *tls.Config) *Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsCfg
	// Keep connections for concurrent callers (a simulator creating
	// thousands of tokens) instead of a TLS handshake per request.
	tr.MaxIdleConnsPerHost = 64
	return &Client{base: strings.TrimRight(baseURL, "/"), hc: &http.Client{Transport: tr, Timeout: time.Minute}}
}

// AdminCredentials reads the admin certificate, key, CA and API URL that
// the hub keeps in its data folder. apiURL overrides the stored URL when
// not empty.
func AdminCredentials(dataDir, apiURL string) (baseURL string, cfg *tls.Config, err error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dataDir, AdminCertFile), filepath.Join(dataDir, AdminKeyFile))
	if err != nil {
		return "", nil, fmt.Errorf("admin credentials in %s (start the hub once to create them): %w", dataDir, err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dataDir, CACertFile))
	if err != nil {
		return "", nil, fmt.Errorf("hub CA: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return "", nil, fmt.Errorf("hub CA %s: no certificate", filepath.Join(dataDir, CACertFile))
	}
	if apiURL == "" {
		b, err := os.ReadFile(filepath.Join(dataDir, APIURLFile))
		if err != nil {
			return "", nil, fmt.Errorf("hub API URL (pass --hub, or start the hub once): %w", err)
		}
		apiURL = strings.TrimSpace(string(b))
	}
	return apiURL, &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots, Certificates: []tls.Certificate{cert}}, nil
}

// StatusError is an API error answer.
type StatusError struct {
	Code    int
	Message string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("hub: %s (HTTP %d)", e.Message, e.Code)
}

// IsStatus reports whether err is an API answer with this status code.
func IsStatus(err error, code int) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Code == code
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	if resp.StatusCode >= 300 {
		var e wire.Error
		if json.Unmarshal(raw, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(raw))
		}
		return &StatusError{Code: resp.StatusCode, Message: e.Error}
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("hub: decode answer: %w", err)
		}
	}
	return nil
}

// Health checks that the hub answers.
func (c *Client) Health(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/v1/health", nil, nil)
}

// Devices lists devices matching a label selector ("" for all).
func (c *Client) Devices(ctx context.Context, selector string) ([]DeviceView, error) {
	var out DeviceListResponse
	path := "/v1/devices"
	if selector != "" {
		path += "?selector=" + url.QueryEscape(selector)
	}
	err := c.do(ctx, http.MethodGet, path, nil, &out)
	return out.Devices, err
}

// Device returns a device with its desired and reported state.
func (c *Client) Device(ctx context.Context, id string) (DeviceDetail, error) {
	var out DeviceDetail
	err := c.do(ctx, http.MethodGet, "/v1/devices/"+url.PathEscape(id), nil, &out)
	return out, err
}

// SetLabels replaces a device's labels.
func (c *Client) SetLabels(ctx context.Context, id string, labels map[string]string) (DeviceView, error) {
	var out DeviceView
	err := c.do(ctx, http.MethodPut, "/v1/devices/"+url.PathEscape(id)+"/labels", LabelsRequest{Labels: labels}, &out)
	return out, err
}

// Revoke revokes a device.
func (c *Client) Revoke(ctx context.Context, id string) (DeviceView, error) {
	var out DeviceView
	err := c.do(ctx, http.MethodPost, "/v1/devices/"+url.PathEscape(id)+"/revoke", nil, &out)
	return out, err
}

// Desired returns a device's desired state.
func (c *Client) Desired(ctx context.Context, id string) (wire.DesiredState, error) {
	var out wire.DesiredState
	err := c.do(ctx, http.MethodGet, "/v1/devices/"+url.PathEscape(id)+"/desired", nil, &out)
	return out, err
}

// SetDesired replaces a device's desired models.
func (c *Client) SetDesired(ctx context.Context, id string, models map[string]wire.DesiredModel) (wire.DesiredState, error) {
	var out wire.DesiredState
	err := c.do(ctx, http.MethodPut, "/v1/devices/"+url.PathEscape(id)+"/desired", DesiredRequest{Models: models}, &out)
	return out, err
}

// CreateToken makes a bootstrap token.
func (c *Client) CreateToken(ctx context.Context, req TokenRequest) (TokenResponse, error) {
	var out TokenResponse
	err := c.do(ctx, http.MethodPost, "/v1/tokens", req, &out)
	return out, err
}
