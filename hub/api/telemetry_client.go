package api

import (
	"context"
	"net/url"
	"strconv"
	"time"

	"github.com/edgefleet/edgefleet/hub/telemetry"
)

// TelemetryOverview is GET /v1/telemetry; recent 0 means the hub's
// default window.
func (c *Client) TelemetryOverview(ctx context.Context, recent time.Duration) (telemetry.Overview, error) {
	var out telemetry.Overview
	path := "/v1/telemetry"
	if recent > 0 {
		path += "?recent=" + url.QueryEscape(recent.String())
	}
	err := c.do(ctx, "GET", path, nil, &out)
	return out, err
}

// TelemetryDevice is GET /v1/telemetry/devices/{id}.
func (c *Client) TelemetryDevice(ctx context.Context, id string) (telemetry.DeviceSummary, error) {
	var out telemetry.DeviceSummary
	err := c.do(ctx, "GET", "/v1/telemetry/devices/"+url.PathEscape(id), nil, &out)
	return out, err
}

// TelemetryWindow is GET /v1/telemetry/devices/{id}/window; a zero since
// and limit 0 mean everything the hub keeps.
func (c *Client) TelemetryWindow(ctx context.Context, id string, since time.Time, limit int) ([]telemetry.Entry, error) {
	q := url.Values{}
	if !since.IsZero() {
		q.Set("since", since.UTC().Format(time.RFC3339))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	path := "/v1/telemetry/devices/" + url.PathEscape(id) + "/window"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out TelemetryWindowResponse
	err := c.do(ctx, "GET", path, nil, &out)
	return out.Entries, err
}

// TelemetrySeries is GET /v1/telemetry/models/{model}/versions/{version}/series.
func (c *Client) TelemetrySeries(ctx context.Context, model, version string, from, to time.Time) (TelemetrySeriesResponse, error) {
	q := url.Values{}
	if !from.IsZero() {
		q.Set("from", from.UTC().Format(time.RFC3339))
	}
	if !to.IsZero() {
		q.Set("to", to.UTC().Format(time.RFC3339))
	}
	path := "/v1/telemetry/models/" + url.PathEscape(model) + "/versions/" + url.PathEscape(version) + "/series"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out TelemetrySeriesResponse
	err := c.do(ctx, "GET", path, nil, &out)
	return out, err
}
