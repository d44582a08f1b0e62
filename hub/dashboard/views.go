package dashboard

import (
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/edgefleet/edgefleet/hub/registry"
	"github.com/edgefleet/edgefleet/hub/rollout"
	"github.com/edgefleet/edgefleet/hub/telemetry"
	"github.com/edgefleet/edgefleet/ota/wire"
)

// errBadParam wraps complaints about query parameters (400).
var errBadParam = errors.New("bad parameter")

// Overview is GET /api/overview.
type Overview struct {
	Time    time.Time    `json:"time"`
	Devices DeviceCounts `json:"devices"`
	// Models lists each model with the versions devices run, by name.
	Models []ModelSummary `json:"models"`
	// Providers counts devices by execution provider: in use by an active
	// model version, and available on the hardware.
	Providers []ProviderCount `json:"providers"`
	Telemetry TelemetryCounts `json:"telemetry"`
	Rollouts  RolloutCounts   `json:"rollouts"`
}

// DeviceCounts count registered devices by presence.
type DeviceCounts struct {
	Total   int `json:"total"`
	Online  int `json:"online"`
	Offline int `json:"offline"`
	Revoked int `json:"revoked"`
}

// ModelSummary is a model across the fleet.
type ModelSummary struct {
	Model string `json:"model"`
	// Devices counts devices that report the model.
	Devices int `json:"devices"`
	// States counts devices by the model's reported state.
	States   map[string]int   `json:"states"`
	Versions []VersionSummary `json:"versions"`
}

// VersionSummary is a model version across the fleet.
type VersionSummary struct {
	Version string `json:"version"`
	// Devices counts devices that report the version active.
	Devices   int            `json:"devices"`
	Providers map[string]int `json:"providers,omitempty"`
	// Serving counts devices whose latest telemetry names the version;
	// Recent is its fleet-wide telemetry over the last five minutes and
	// Requests its cumulative request count.
	Serving  int              `json:"serving"`
	Recent   *telemetry.Point `json:"recent,omitempty"`
	Requests uint64           `json:"requests"`
}

// ProviderCount is an execution provider's device counts.
type ProviderCount struct {
	Name      string `json:"name"`
	InUse     int    `json:"in_use"`
	Available int    `json:"available"`
}

// TelemetryCounts summarise the telemetry store.
type TelemetryCounts struct {
	Devices    int    `json:"devices"`
	Reporting  int    `json:"reporting"`
	Stored     uint64 `json:"stored"`
	Duplicates uint64 `json:"duplicates"`
	Dropped    uint64 `json:"dropped"`
}

// RolloutCounts summarise the rollouts; Active are those not final, newest
// first.
type RolloutCounts struct {
	Total  int              `json:"total"`
	Active []rollout.Status `json:"active"`
}

// DeviceRow is a device in lists.
type DeviceRow struct {
	ID              string                        `json:"id"`
	Online          bool                          `json:"online"`
	Revoked         bool                          `json:"revoked,omitempty"`
	Labels          map[string]string             `json:"labels"`
	Hardware        wire.Hardware                 `json:"hardware"`
	AgentVersion    string                        `json:"agent_version,omitempty"`
	Models          map[string]wire.ReportedModel `json:"models,omitempty"`
	AppliedRevision int64                         `json:"applied_revision"`
	DesiredRevision int64                         `json:"desired_revision"`
	FailedRevision  int64                         `json:"failed_revision,omitempty"`
	LastError       string                        `json:"last_error,omitempty"`
	Enrolled        time.Time                     `json:"enrolled"`
	LastSeen        time.Time                     `json:"last_seen,omitzero"`
	HeartbeatS      int64                         `json:"heartbeat_s,omitempty"`
	// Reporting and LastReport describe the device's telemetry.
	Reporting  bool      `json:"reporting"`
	LastReport time.Time `json:"last_report,omitzero"`
}

// DeviceList is GET /api/devices.
type DeviceList struct {
	// Total counts the devices matching the filter; Devices holds the
	// requested page of them.
	Total   int         `json:"total"`
	Devices []DeviceRow `json:"devices"`
}

// DeviceDetail is GET /api/devices/{id}.
type DeviceDetail struct {
	Device    DeviceRow                `json:"device"`
	Desired   wire.DesiredState        `json:"desired"`
	Telemetry *telemetry.DeviceSummary `json:"telemetry,omitempty"`
	// Window holds the newest telemetry snapshots, oldest first.
	Window []telemetry.Entry `json:"window"`
	// Rollouts are the rollouts that took the device in, newest first.
	Rollouts []DeviceRollout `json:"rollouts"`
}

// DeviceRollout is a device's part in a rollout.
type DeviceRollout struct {
	ID      string `json:"id"`
	Model   string `json:"model"`
	Version string `json:"version"`
	State   string `json:"state"`
	Phase   string `json:"phase"`
	Wave    int    `json:"wave"`
}

// RolloutList is GET /api/rollouts.
type RolloutList struct {
	Rollouts []rollout.Status `json:"rollouts"`
}

// Models is GET /api/models.
type Models struct {
	From   time.Time `json:"from"`
	To     time.Time `json:"to"`
	Series []Series  `json:"series"`
}

// Series is a model version's fleet-wide telemetry over time.
type Series struct {
	Model   string            `json:"model"`
	Version string            `json:"version"`
	Points  []telemetry.Point `json:"points"`
}

func (s *Server) row(d registry.Device, now time.Time, tel map[string]telemetry.DeviceSummary) DeviceRow {
	r := DeviceRow{ID: d.ID, Online: d.IsOnline(now), Revoked: d.Revoked, Labels: d.Labels, Hardware: d.Hardware,
		AgentVersion: d.AgentVersion, Models: d.Models, AppliedRevision: d.AppliedRevision,
		DesiredRevision: d.DesiredRevision, FailedRevision: d.FailedRevision, LastError: d.LastError,
		Enrolled: d.Enrolled, LastSeen: d.LastSeen, HeartbeatS: d.HeartbeatSeconds}
	if r.Labels == nil {
		r.Labels = map[string]string{}
	}
	if t, ok := tel[d.ID]; ok {
		r.Reporting, r.LastReport = t.Reporting, t.LastReport
	}
	return r
}

// telemetryByDevice indexes the telemetry store's device summaries.
func (s *Server) telemetryByDevice() map[string]telemetry.DeviceSummary {
	out := map[string]telemetry.DeviceSummary{}
	if s.cfg.Telemetry != nil {
		for _, d := range s.cfg.Telemetry.Devices() {
			d.Last = nil // rows need presence only
			out[d.ID] = d
		}
	}
	return out
}

func (s *Server) overview(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	devs, err := s.cfg.Registry.List(ctx, registry.Selector{})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	now := s.cfg.Now()
	out := Overview{Time: now.UTC(), Models: []ModelSummary{}, Providers: []ProviderCount{}}
	type mv struct{ model, version string }
	models := map[string]*ModelSummary{}
	versions := map[mv]*VersionSummary{}
	model := func(name string) *ModelSummary {
		m := models[name]
		if m == nil {
			m = &ModelSummary{Model: name, States: map[string]int{}, Versions: []VersionSummary{}}
			models[name] = m
		}
		return m
	}
	version := func(k mv) *VersionSummary {
		model(k.model)
		v := versions[k]
		if v == nil {
			v = &VersionSummary{Version: k.version, Providers: map[string]int{}}
			versions[k] = v
		}
		return v
	}
	providers := map[string]*ProviderCount{}
	provider := func(name string) *ProviderCount {
		p := providers[name]
		if p == nil {
			p = &ProviderCount{Name: name}
			providers[name] = p
		}
		return p
	}
	for _, d := range devs {
		out.Devices.Total++
		switch {
		case d.Revoked:
			out.Devices.Revoked++
		case d.IsOnline(now):
			out.Devices.Online++
		default:
			out.Devices.Offline++
		}
		if d.Revoked {
			continue
		}
		for _, p := range unique(d.Hardware.Providers) {
			provider(p).Available++
		}
		inUse := map[string]bool{}
		for name, m := range d.Models {
			if m.ActiveVersion != "" {
				v := version(mv{name, m.ActiveVersion})
				v.Devices++
				if m.Provider != "" {
					v.Providers[m.Provider]++
					inUse[m.Provider] = true
				}
			}
			ms := model(name)
			ms.Devices++
			st := m.State
			if st == "" {
				st = "unknown"
			}
			ms.States[st]++
		}
		for p := range inUse {
			provider(p).InUse++
		}
	}
	if s.cfg.Telemetry != nil {
		to := s.cfg.Telemetry.Overview(5 * time.Minute)
		out.Telemetry = TelemetryCounts{Devices: to.Devices, Reporting: to.Reporting, Stored: to.Stored,
			Duplicates: to.Duplicates, Dropped: to.Dropped}
		for _, tv := range to.Versions {
			v := version(mv{tv.Model, tv.Version})
			v.Serving = tv.Devices
			v.Requests = tv.Totals.Requests
			p := tv.Recent
			v.Recent = &p
		}
	}
	for k, v := range versions {
		models[k.model].Versions = append(models[k.model].Versions, *v)
	}
	for _, m := range models {
		sort.Slice(m.Versions, func(i, j int) bool { return versionLess(m.Versions[j].Version, m.Versions[i].Version) })
		out.Models = append(out.Models, *m)
	}
	sort.Slice(out.Models, func(i, j int) bool { return out.Models[i].Model < out.Models[j].Model })
	for _, p := range providers {
		out.Providers = append(out.Providers, *p)
	}
	sort.Slice(out.Providers, func(i, j int) bool {
		a, b := out.Providers[i], out.Providers[j]
		if a.InUse != b.InUse {
			return a.InUse > b.InUse
		}
		return a.Name < b.Name
	})
	out.Rollouts.Active = []rollout.Status{}
	if s.cfg.Rollouts != nil {
		list, err := s.cfg.Rollouts.List(ctx)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		out.Rollouts.Total = len(list)
		for _, st := range list {
			if !rollout.Final(st.State) {
				out.Rollouts.Active = append(out.Rollouts.Active, st)
			}
		}
	}
	writeJSON(w, out)
}

// versionLess orders versions by their dot-separated parts, numerically
// where both parts are numbers ("2" < "10", "1.5" < "1.10").
func versionLess(a, b string) bool {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := range min(len(pa), len(pb)) {
		if pa[i] == pb[i] {
			continue
		}
		x, errX := strconv.ParseUint(pa[i], 10, 64)
		y, errY := strconv.ParseUint(pb[i], 10, 64)
		if errX == nil && errY == nil && x != y {
			return x < y
		}
		return pa[i] < pb[i]
	}
	return len(pa) < len(pb)
}

func unique(s []string) []string {
	seen := map[string]bool{}
	out := s[:0:0]
	for _, v := range s {
		if v != "" && !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

// matches tells whether a device matches a free-text filter: a substring
// of its id, of a label ("site=berlin"), of a model name or of an active
// version ("digits:2").
func matches(d registry.Device, q string) bool {
	if q == "" {
		return true
	}
	q = strings.ToLower(q)
	if strings.Contains(strings.ToLower(d.ID), q) {
		return true
	}
	for k, v := range d.Labels {
		if strings.Contains(strings.ToLower(k+"="+v), q) {
			return true
		}
	}
	for name, m := range d.Models {
		if strings.Contains(strings.ToLower(name+":"+m.ActiveVersion), q) {
			return true
		}
	}
	return false
}

func intParam(r *http.Request, name string, def, lo, hi int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("%s=%q: want an integer from %d to %d: %w", name, v, lo, hi, errBadParam)
	}
	return n, nil
}

func (s *Server) devices(w http.ResponseWriter, r *http.Request) {
	limit, err := intParam(r, "limit", 200, 1, maxDeviceRows)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	offset, err := intParam(r, "offset", 0, 0, 1<<30)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	devs, err := s.cfg.Registry.List(r.Context(), registry.Selector{})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	tel := s.telemetryByDevice()
	now := s.cfg.Now()
	out := DeviceList{Devices: []DeviceRow{}}
	for _, d := range devs {
		if !matches(d, q) {
			continue
		}
		if out.Total >= offset && len(out.Devices) < limit {
			out.Devices = append(out.Devices, s.row(d, now, tel))
		}
		out.Total++
	}
	writeJSON(w, out)
}

func (s *Server) device(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	n, err := intParam(r, "window", 30, 1, telemetry.DefaultWindow)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	id := r.PathValue("id")
	d, err := s.cfg.Registry.Get(ctx, id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ds, err := s.cfg.Registry.Desired(ctx, id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := DeviceDetail{Desired: ds, Window: []telemetry.Entry{}, Rollouts: []DeviceRollout{}}
	tel := map[string]telemetry.DeviceSummary{}
	if s.cfg.Telemetry != nil {
		if sum, ok := s.cfg.Telemetry.Device(id); ok {
			out.Telemetry = &sum
			tel[id] = sum
		}
		win, err := s.cfg.Telemetry.Window(id, time.Time{}, n)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if win != nil {
			out.Window = win
		}
	}
	out.Device = s.row(d, s.cfg.Now(), tel)
	if s.cfg.Rollouts != nil {
		list, err := s.cfg.Rollouts.List(ctx)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		const maxRollouts = 20
		for _, st := range list[:min(len(list), maxRollouts)] {
			full, err := s.cfg.Rollouts.Get(ctx, st.ID, true)
			if err != nil {
				continue // removed meanwhile
			}
			for _, rd := range full.Devices {
				if rd.ID == id {
					out.Rollouts = append(out.Rollouts, DeviceRollout{ID: st.ID, Model: st.Spec.Model,
						Version: st.Spec.Version, State: st.State, Phase: rd.Phase, Wave: rd.Wave})
					break
				}
			}
		}
	}
	writeJSON(w, out)
}

func (s *Server) rollouts(w http.ResponseWriter, r *http.Request) {
	out := RolloutList{Rollouts: []rollout.Status{}}
	if s.cfg.Rollouts != nil {
		list, err := s.cfg.Rollouts.List(r.Context())
		if err != nil {
			s.fail(w, r, err)
			return
		}
		out.Rollouts = append(out.Rollouts, list...)
	}
	writeJSON(w, out)
}

func (s *Server) rollout(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Rollouts == nil {
		s.fail(w, r, fmt.Errorf("rollout %q: %w", r.PathValue("id"), rollout.ErrNotFound))
		return
	}
	st, err := s.cfg.Rollouts.Get(r.Context(), r.PathValue("id"), true)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, st)
}

func (s *Server) models(w http.ResponseWriter, r *http.Request) {
	minutes, err := intParam(r, "minutes", 30, 1, 24*60)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	to := s.cfg.Now()
	from := to.Add(-time.Duration(minutes) * time.Minute)
	out := Models{From: from.UTC(), To: to.UTC(), Series: []Series{}}
	if s.cfg.Telemetry != nil {
		for _, mv := range s.cfg.Telemetry.ModelVersions() {
			pts := s.cfg.Telemetry.Series(mv.Model, mv.Version, from, to)
			if pts == nil {
				pts = []telemetry.Point{}
			}
			out.Series = append(out.Series, Series{Model: mv.Model, Version: mv.Version, Points: pts})
		}
	}
	writeJSON(w, out)
}
