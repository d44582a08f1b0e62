package sidecar_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/sidecar"
)

// BenchmarkReview times one admission review of the Deployment fixture
// through the HTTP handler (decode, decide, patch, encode) and reports the
// p50 and p99 of the individual reviews.
func BenchmarkReview(b *testing.B) {
	pod, err := os.ReadFile("testdata/pods/deployment.json")
	if err != nil {
		b.Fatal(err)
	}
	body := review(b, pod, "bench")
	inj := sidecar.NewInjector(defaults(), nil, nil)
	lat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	for b.Loop() {
		start := time.Now()
		rec := httptest.NewRecorder()
		inj.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, sidecar.MutatePath, bytes.NewReader(body)))
		lat = append(lat, time.Since(start))
		if rec.Code != 200 {
			b.Fatal(rec.Code)
		}
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
