package sidecar

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"
)

// Names the injector adds to a pod.
const (
	ContainerName   = "edgefleet-agent"
	DataVolume      = "edgefleet-data"
	SocketVolume    = "edgefleet-socket"
	TrustKeysVolume = "edgefleet-trust-keys"

	DataDir      = "/var/lib/edgefleet"
	SocketDir    = "/var/run/edgefleet"
	SocketPath   = SocketDir + "/agent.sock"
	TrustKeysDir = "/etc/edgefleet/trust-keys"

	// EnvURL, EnvSocket and EnvGRPC are set in the application's containers.
	EnvURL    = "EDGEFLEET_URL"
	EnvSocket = "EDGEFLEET_SOCKET"
	EnvGRPC   = "EDGEFLEET_GRPC_ADDR"
	envToken  = "EDGEFLEET_HUB_TOKEN"
)

// Defaults are the injector's settings for what a pod's annotations leave
// out.
type Defaults struct {
	Image           string
	PullPolicy      corev1.PullPolicy
	HTTPPort        int32 // REST on 127.0.0.1
	GRPCPort        int32 // gRPC on 127.0.0.1
	HealthPort      int32 // /v2/health/* and /metrics on the pod IP, for probes
	TrustKeysSecret string
	Resources       corev1.ResourceRequirements
	// StartupTimeoutSeconds bounds how long the startup probe waits for the
	// models (download and warm-up) before the kubelet restarts the agent.
	StartupTimeoutSeconds int32
	RunAsUser             int64
}

// DefaultDefaults are the injector's defaults before its flags.
func DefaultDefaults() Defaults {
	return Defaults{
		Image: "edgefleet/agent:latest", PullPolicy: corev1.PullIfNotPresent,
		HTTPPort: 8080, GRPCPort: 8081, HealthPort: 8086,
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{
				corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
		},
		StartupTimeoutSeconds: 600, RunAsUser: 65532,
	}
}

// Injected reports whether the pod already carries the agent (a reinvoked
// webhook, or a pod created from an injected pod's spec).
func Injected(pod *corev1.Pod) bool {
	has := func(cs []corev1.Container) bool {
		return slices.ContainsFunc(cs, func(c corev1.Container) bool { return c.Name == ContainerName })
	}
	return has(pod.Spec.InitContainers) || has(pod.Spec.Containers)
}

// Operation is one JSON Patch (RFC 6902) operation.
type Operation struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// escape escapes one JSON Pointer (RFC 6901) reference token.
func escape(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// Patch returns the JSON Patch that adds the agent s describes to pod. It
// checks first what the patch would collide with (names of volumes,
// ports); an error means nothing may be applied.
func Patch(pod *corev1.Pod, s Spec, d Defaults) ([]Operation, error) {
	var errs []error
	if len(pod.Spec.Containers) == 0 {
		errs = append(errs, errors.New("the pod has no containers"))
	}
	if pod.Spec.HostNetwork {
		errs = append(errs, errors.New("hostNetwork pods share the node's loopback; the agent's ports would collide"))
	}
	vols := podVolumes(s)
	for _, v := range pod.Spec.Volumes {
		if slices.ContainsFunc(vols, func(x corev1.Volume) bool { return x.Name == v.Name }) {
			errs = append(errs, fmt.Errorf("the pod already has a volume named %s", v.Name))
		}
	}
	ours := []int32{s.HTTPPort, s.GRPCPort, d.HealthPort}
	for _, c := range append(slices.Clone(pod.Spec.InitContainers), pod.Spec.Containers...) {
		for _, p := range c.Ports {
			if slices.Contains(ours, p.ContainerPort) {
				errs = append(errs, fmt.Errorf("container %s uses port %d, which the agent needs (set %s / %s)",
					c.Name, p.ContainerPort, AnnotationHTTPPort, AnnotationGRPCPort))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	var ops []Operation
	add := func(path string, v any) { ops = append(ops, Operation{Op: "add", Path: path, Value: v}) }

	if pod.Annotations == nil {
		add("/metadata/annotations", map[string]string{AnnotationInjected: "true"})
	} else {
		add("/metadata/annotations/"+escape(AnnotationInjected), "true")
	}
	env := appEnv(s)
	mounts := appMounts(s)
	// The application's containers first, by their indexes before the
	// agent is inserted at the head of the init containers.
	appPatch := func(kind string, cs []corev1.Container) {
		for i, c := range cs {
			base := fmt.Sprintf("/spec/%s/%d", kind, i)
			var newEnv []corev1.EnvVar
			for _, e := range env {
				if !slices.ContainsFunc(c.Env, func(x corev1.EnvVar) bool { return x.Name == e.Name }) {
					newEnv = append(newEnv, e)
				}
			}
			appendList(add, base+"/env", len(c.Env) == 0, newEnv)
			var newMounts []corev1.VolumeMount
			for _, m := range mounts {
				if !slices.ContainsFunc(c.VolumeMounts, func(x corev1.VolumeMount) bool { return x.MountPath == m.MountPath }) {
					newMounts = append(newMounts, m)
				}
			}
			appendList(add, base+"/volumeMounts", len(c.VolumeMounts) == 0, newMounts)
		}
	}
	appPatch("initContainers", pod.Spec.InitContainers)
	appPatch("containers", pod.Spec.Containers)
	appendList(add, "/spec/volumes", len(pod.Spec.Volumes) == 0, vols)
	agent := Container(s, d)
	if len(pod.Spec.InitContainers) == 0 {
		add("/spec/initContainers", []corev1.Container{agent})
	} else {
		add("/spec/initContainers/0", agent) // first: later init containers may use the models
	}
	return ops, nil
}

// appendList adds items to the list at path: the whole list when the pod
// has none (or an empty one), else one "-" append per item.
func appendList[T any](add func(string, any), path string, empty bool, items []T) {
	if len(items) == 0 {
		return
	}
	if empty {
		add(path, items)
		return
	}
	for _, it := range items {
		add(path+"/-", it)
	}
}

func appEnv(s Spec) []corev1.EnvVar {
	env := []corev1.EnvVar{
		{Name: EnvURL, Value: "http://127.0.0.1:" + strconv.Itoa(int(s.HTTPPort))},
		{Name: EnvGRPC, Value: "127.0.0.1:" + strconv.Itoa(int(s.GRPCPort))},
	}
	if s.Socket {
		env = append(env, corev1.EnvVar{Name: EnvSocket, Value: SocketPath})
	}
	return env
}

func appMounts(s Spec) []corev1.VolumeMount {
	if !s.Socket {
		return nil
	}
	return []corev1.VolumeMount{{Name: SocketVolume, MountPath: SocketDir}}
}

func podVolumes(s Spec) []corev1.Volume {
	vols := []corev1.Volume{{Name: DataVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	if s.Socket {
		vols = append(vols, corev1.Volume{Name: SocketVolume, VolumeSource: corev1.VolumeSource{
			EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}})
	}
	if s.TrustKeysSecret != "" {
		vols = append(vols, corev1.Volume{Name: TrustKeysVolume, VolumeSource: corev1.VolumeSource{
			Secret: &corev1.SecretVolumeSource{SecretName: s.TrustKeysSecret, DefaultMode: ptr.To[int32](0o444)}}})
	}
	return vols
}

// Args returns the agent's command line for s (after the image's entry
// point, the edgefleet binary).
func Args(s Spec, d Defaults) []string {
	args := []string{"agent", "--data", DataDir, "--log-format", "json",
		"--http", "127.0.0.1:" + strconv.Itoa(int(s.HTTPPort)),
		"--grpc", "127.0.0.1:" + strconv.Itoa(int(s.GRPCPort)),
		"--health", ":" + strconv.Itoa(int(d.HealthPort)),
		"--providers", strings.Join(s.Providers, ",")}
	if s.Socket {
		args = append(args, "--unix", SocketPath, "--unix-mode", "0666")
	}
	for _, m := range s.Models {
		args = append(args, "--model", m.Name+"="+m.Ref)
	}
	if s.TrustKeysSecret != "" {
		args = append(args, "--trust-key", TrustKeysDir)
	}
	if s.Hub != "" {
		args = append(args, "--hub", s.Hub, "--token", "$("+envToken+")")
	}
	return args
}

// Container returns the agent's native sidecar container for s.
func Container(s Spec, d Defaults) corev1.Container {
	probe := func(path string, period, failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: path, Port: intOrString(d.HealthPort), Scheme: corev1.URISchemeHTTP}},
			PeriodSeconds: period, FailureThreshold: failures, TimeoutSeconds: 1, SuccessThreshold: 1,
		}
	}
	startup := probe("/v2/health/ready", 1, max(d.StartupTimeoutSeconds, 1))
	c := corev1.Container{
		Name: ContainerName, Image: s.Image, ImagePullPolicy: d.PullPolicy,
		Args:          Args(s, d),
		RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways),
		Ports: []corev1.ContainerPort{{Name: "edgefleet-hlth", ContainerPort: d.HealthPort,
			Protocol: corev1.ProtocolTCP}},
		Resources:      *s.Resources.DeepCopy(),
		StartupProbe:   startup,
		ReadinessProbe: probe("/v2/health/ready", 5, 3),
		LivenessProbe:  probe("/v2/health/live", 10, 3),
		VolumeMounts:   []corev1.VolumeMount{{Name: DataVolume, MountPath: DataDir}},
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To(d.RunAsUser), RunAsGroup: ptr.To(d.RunAsUser),
			AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
			Capabilities:   &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
	if s.Socket {
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: SocketVolume, MountPath: SocketDir})
	}
	if s.TrustKeysSecret != "" {
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: TrustKeysVolume, MountPath: TrustKeysDir, ReadOnly: true})
	}
	if s.Hub != "" {
		c.Env = append(c.Env, corev1.EnvVar{Name: envToken, ValueFrom: &corev1.EnvVarSource{
			SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: s.TokenSecret}, Key: "token"}}})
	}
	if _, ok := s.Resources.Limits[corev1.ResourceMemory]; ok {
		// The Go runtime collects before the container's memory limit is hit.
		c.Env = append(c.Env, corev1.EnvVar{Name: "GOMEMLIMIT", ValueFrom: &corev1.EnvVarSource{
			ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.memory", Divisor: resource.MustParse("1")}}})
	}
	return c
}
