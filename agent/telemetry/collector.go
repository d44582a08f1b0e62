package telemetry

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	descQueueSnapshots = prometheus.NewDesc("edgefleet_agent_telemetry_queue_snapshots",
		"Telemetry snapshots queued for the hub.", nil, nil)
	descQueueBytes = prometheus.NewDesc("edgefleet_agent_telemetry_queue_bytes",
		"Bytes of telemetry snapshots queued for the hub.", nil, nil)
	descQueueBudget = prometheus.NewDesc("edgefleet_agent_telemetry_queue_budget_bytes",
		"Byte budget of the telemetry queue.", nil, nil)
	descDropped = prometheus.NewDesc("edgefleet_agent_telemetry_dropped_total",
		"Telemetry snapshots discarded unsent because the queue was full (since the queue was created).", nil, nil)
	descAcked = prometheus.NewDesc("edgefleet_agent_telemetry_acked_seq",
		"Highest telemetry sequence number the hub acknowledged.", nil, nil)
	descSent = prometheus.NewDesc("edgefleet_agent_telemetry_sent_snapshots_total",
		"Telemetry snapshots the hub acknowledged, by transport.", []string{"transport"}, nil)
	descSendErrors = prometheus.NewDesc("edgefleet_agent_telemetry_send_errors_total",
		"Failed telemetry sends, by transport.", []string{"transport"}, nil)
	descFallbacks = prometheus.NewDesc("edgefleet_agent_telemetry_quic_fallbacks_total",
		"Switches from QUIC to MQTT because the hub could not be reached over UDP.", nil, nil)

	descSystemCPU = prometheus.NewDesc("edgefleet_agent_system_cpu_ratio",
		"Busy fraction of all the machine's cores over the last telemetry interval.", nil, nil)
	descMemAvail = prometheus.NewDesc("edgefleet_agent_memory_available_bytes",
		"Memory available on the machine.", nil, nil)
	descDiskFree = prometheus.NewDesc("edgefleet_agent_disk_free_bytes",
		"Free bytes of the file system holding the data folder.", nil, nil)
	descDiskTotal = prometheus.NewDesc("edgefleet_agent_disk_total_bytes",
		"Size of the file system holding the data folder.", nil, nil)
	descGPUMemUsed = prometheus.NewDesc("edgefleet_agent_gpu_memory_used_bytes",
		"GPU memory in use.", []string{"gpu", "name"}, nil)
	descGPUMemTotal = prometheus.NewDesc("edgefleet_agent_gpu_memory_total_bytes",
		"GPU memory installed.", []string{"gpu", "name"}, nil)
	descGPUUtil = prometheus.NewDesc("edgefleet_agent_gpu_utilization_ratio",
		"Fraction of time a GPU kernel ran.", []string{"gpu", "name"}, nil)
)

// Describe implements prometheus.Collector: the queue, the shipper and the
// machine as of the last snapshot, for the agent's local /metrics.
func (t *Telemetry) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descQueueSnapshots, descQueueBytes, descQueueBudget, descDropped,
		descAcked, descSent, descSendErrors, descFallbacks, descSystemCPU, descMemAvail, descDiskFree,
		descDiskTotal, descGPUMemUsed, descGPUMemTotal, descGPUUtil} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (t *Telemetry) Collect(ch chan<- prometheus.Metric) {
	st := t.Status()
	q := st.Queue
	gauge := func(d *prometheus.Desc, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
	}
	counter := func(d *prometheus.Desc, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, lv...)
	}
	gauge(descQueueSnapshots, float64(q.Snapshots))
	gauge(descQueueBytes, float64(q.Bytes))
	gauge(descQueueBudget, float64(q.Budget))
	counter(descDropped, float64(q.Dropped))
	gauge(descAcked, float64(q.Acked))
	for _, tr := range []string{TransportMQTT, TransportQUIC} {
		counter(descSent, float64(st.Sent[tr]), tr)
		counter(descSendErrors, float64(st.SendErrors[tr]), tr)
	}
	counter(descFallbacks, float64(st.Fallbacks))
	box := t.sampler.Box()
	gauge(descSystemCPU, box.SystemCPU)
	if box.MemTotalBytes > 0 {
		gauge(descMemAvail, float64(box.MemAvailableBytes))
	}
	if box.DiskTotalBytes > 0 {
		gauge(descDiskFree, float64(box.DiskFreeBytes))
		gauge(descDiskTotal, float64(box.DiskTotalBytes))
	}
	for _, g := range box.GPUs {
		idx := strconv.Itoa(g.Index)
		gauge(descGPUMemUsed, float64(g.MemUsedBytes), idx, g.Name)
		gauge(descGPUMemTotal, float64(g.MemTotalBytes), idx, g.Name)
		gauge(descGPUUtil, g.Utilization, idx, g.Name)
	}
}

var _ prometheus.Collector = (*Telemetry)(nil)
