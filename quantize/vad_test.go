package quantize

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The Silero VAD check: frame-level F1 of the speech class on Debian's
// Asterisk prompts (asterisk-core-sounds-en-wav: a woman reading ~900 short
// prompts; its silence/ folder holds 1-10 s of silence) and music on hold
// (asterisk-moh-opsound-wav), all 8 kHz 16-bit mono WAV. `make deps`
// extracts both packages under .deps/debs (deploy/deps/fetch-debs.sh).
//
// Labels. The prompts are speech with short pauses and lead-in/out
// silence, so whole-file labels would call those pauses speech. Each
// 32 ms frame of a prompt is labelled by energy instead: speech when its
// RMS is within vadSpeechRange dB of the prompt's loudest frame and above
// vadFloorDB dBFS, with vadHangover frames of hangover after a speech frame
// (a VAD, like a listener, holds through the decay of a word). Every frame
// of silence/ and of the music is non-speech.
//
// Audio. The 8 kHz samples are resampled to 16 kHz (the model's rate) with
// a windowed-sinc interpolator (resample) and fed as Silero's wrapper
// does: chunks of 512 samples with the previous chunk's last 64 samples
// prepended (input [1, 576]), sr = 16000, the recurrent state [2, 1, 128]
// carried from chunk to chunk and reset per file; a frame is speech when
// the output probability is >= 0.5.
const (
	vadRate        = 16000
	vadChunk       = 512
	vadContext     = 64
	vadThreshold   = 0.5
	vadSpeechRange = 30.0 // dB below the prompt's loudest frame
	vadFloorDB     = -50.0
	vadHangover    = 3 // frames (96 ms)
)

// debsDir is where deploy/deps/fetch-debs.sh extracts Debian packages.
var debsDir = filepath.Join("..", ".deps", "debs")

// vadClip is one audio file as 16 kHz samples with a label per chunk.
type vadClip struct {
	name    string
	samples []float32
	speech  []bool // per vadChunk frame
}

// vadFiles lists the WAV files of the F1 set: the prompts (speech),
// silence/ and the music. limit > 0 takes every n-th prompt so that about
// limit of them are used, and caps music at limit seconds per file.
func vadFiles(t testing.TB) (speech, silence, music []string) {
	t.Helper()
	sounds := filepath.Join(debsDir, "asterisk-core-sounds-en-wav", "usr", "share", "asterisk", "sounds", "en_US_f_Allison")
	moh := filepath.Join(debsDir, "asterisk-moh-opsound-wav", "usr", "share", "asterisk", "moh")
	for _, d := range []string{sounds, moh} {
		if _, err := os.Stat(d); err != nil {
			if os.Getenv("CI") == "" {
				t.Skipf("%v (run make deps)", err)
			}
			t.Fatalf("%v (make deps extracts it)", err)
		}
	}
	err := filepath.WalkDir(sounds, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".wav") {
			return err
		}
		if filepath.Base(filepath.Dir(p)) == "silence" {
			silence = append(silence, p)
		} else {
			speech = append(speech, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	music, err = filepath.Glob(filepath.Join(moh, "*.wav"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(speech)
	slices.Sort(silence)
	slices.Sort(music)
	if len(speech) == 0 || len(silence) == 0 || len(music) == 0 {
		t.Fatalf("%d speech, %d silence, %d music files", len(speech), len(silence), len(music))
	}
	return speech, silence, music
}

// vadDataset loads the F1 set. every > 1 keeps every n-th prompt and
// maxSeconds > 0 caps each silence and music file (for a short test).
func vadDataset(t testing.TB, every, maxSeconds int) []vadClip {
	t.Helper()
	speech, silence, music := vadFiles(t)
	var clips []vadClip
	load := func(p string, isSpeech bool) {
		x, rate, err := readWAV(p)
		if err != nil {
			t.Fatal(err)
		}
		if maxSeconds > 0 && !isSpeech && len(x) > maxSeconds*rate {
			x = x[:maxSeconds*rate]
		}
		y := resample(x, rate, vadRate)
		c := vadClip{name: p, samples: y, speech: make([]bool, len(y)/vadChunk)}
		if isSpeech {
			c.speech = energyLabels(y)
		}
		clips = append(clips, c)
	}
	for i, p := range speech {
		if every <= 1 || i%every == 0 {
			load(p, true)
		}
	}
	for _, p := range slices.Concat(silence, music) {
		load(p, false)
	}
	return clips
}

// energyLabels labels each vadChunk frame of a prompt (see the comment at
// the top of this file).
func energyLabels(x []float32) []bool {
	n := len(x) / vadChunk
	db := make([]float64, n)
	peak := math.Inf(-1)
	for f := range n {
		var e float64
		for _, v := range x[f*vadChunk : (f+1)*vadChunk] {
			e += float64(v) * float64(v)
		}
		db[f] = 10 * math.Log10(e/vadChunk+1e-20)
		peak = max(peak, db[f])
	}
	out := make([]bool, n)
	hold := 0
	for f := range n {
		if db[f] >= peak-vadSpeechRange && db[f] >= vadFloorDB {
			out[f], hold = true, vadHangover
		} else if hold > 0 {
			out[f] = true
			hold--
		}
	}
	return out
}

// readWAV reads a 16-bit PCM WAV file as mono float32 samples in [-1, 1)
// (channels averaged) and its sample rate.
func readWAV(path string) ([]float32, int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, err
	}
	if len(b) < 12 || string(b[:4]) != "RIFF" || string(b[8:12]) != "WAVE" {
		return nil, 0, fmt.Errorf("%s: not a RIFF/WAVE file", path)
	}
	var channels, bits, format int
	var rate int
	for p := 12; p+8 <= len(b); {
		id, size := string(b[p:p+4]), int(binary.LittleEndian.Uint32(b[p+4:]))
		body := b[p+8:]
		if size > len(body) {
			size = len(body) // a truncated last chunk: take what is there
		}
		body = body[:size]
		switch id {
		case "fmt ":
			if size < 16 {
				return nil, 0, fmt.Errorf("%s: fmt chunk of %d bytes", path, size)
			}
			format = int(binary.LittleEndian.Uint16(body))
			channels = int(binary.LittleEndian.Uint16(body[2:]))
			rate = int(binary.LittleEndian.Uint32(body[4:]))
			bits = int(binary.LittleEndian.Uint16(body[14:]))
		case "data":
			if format != 1 || bits != 16 || channels < 1 {
				return nil, 0, fmt.Errorf("%s: format %d, %d bits, %d channels: want 16-bit PCM", path, format, bits, channels)
			}
			n := size / 2 / channels
			out := make([]float32, n)
			for i := range n {
				var s float32
				for c := range channels {
					s += float32(int16(binary.LittleEndian.Uint16(body[2*(i*channels+c):])))
				}
				out[i] = s / float32(channels) / 32768
			}
			return out, rate, nil
		}
		p += 8 + size + size%2
	}
	return nil, 0, fmt.Errorf("%s: no data chunk", path)
}

// resample converts x from rate from to rate to with a windowed-sinc
// interpolator: each output sample is the sum of the input samples within
// 16 periods of the lower rate, weighted by a sinc low-pass at 0.95 × the
// lower rate's Nyquist frequency under a Blackman window (polyphase: one
// set of weights per output phase, to/gcd of them). It is exact for
// band-limited signals up to the window's accuracy and leaves no images
// when upsampling; samples beyond the ends count as 0.
func resample(x []float32, from, to int) []float32 {
	if from == to {
		return slices.Clone(x)
	}
	const taps = 16
	gcd := func(a, b int) int {
		for b != 0 {
			a, b = b, a%b
		}
		return a
	}(from, to)
	up, down := to/gcd, from/gcd
	ratio := float64(to) / float64(from)
	cut := 0.95 * min(1, ratio) // cutoff as a fraction of the input Nyquist
	half := taps / min(1, ratio)
	type phase struct {
		j0 int
		w  []float64
	}
	phases := make([]phase, up)
	for p := range phases {
		frac := float64(p) / float64(up)
		j0 := int(math.Ceil(frac - half))
		j1 := int(math.Floor(frac + half))
		w := make([]float64, 0, j1-j0+1)
		for j := j0; j <= j1; j++ {
			d := frac - float64(j)
			win := 0.42 + 0.5*math.Cos(math.Pi*d/half) + 0.08*math.Cos(2*math.Pi*d/half)
			w = append(w, cut*sinc(cut*d)*win)
		}
		phases[p] = phase{j0, w}
	}
	out := make([]float32, len(x)*up/down)
	for i := range out {
		k0, ph := i*down/up, &phases[i*down%up]
		var acc float64
		for j, w := range ph.w {
			if k := k0 + ph.j0 + j; k >= 0 && k < len(x) {
				acc += float64(x[k]) * w
			}
		}
		out[i] = float32(acc)
	}
	return out
}

func sinc(x float64) float64 {
	if x == 0 {
		return 1
	}
	return math.Sin(math.Pi*x) / (math.Pi * x)
}

// vadF1 returns an Evaluator: the frame-level F1 of the speech class of a
// Silero VAD model on clips.
func vadF1(clips []vadClip) Evaluator {
	return func(ctx context.Context, model []byte) (float64, error) {
		s, err := newSession(model, []string{"input", "sr", "state"}, []string{"output", "stateN"})
		if err != nil {
			return 0, err
		}
		defer s.Close()
		var tp, fp, fn int
		for _, c := range clips {
			pred, err := vadPredict(ctx, s, c.samples)
			if err != nil {
				return 0, fmt.Errorf("%s: %w", c.name, err)
			}
			for f, want := range c.speech {
				switch got := pred[f] >= vadThreshold; {
				case got && want:
					tp++
				case got:
					fp++
				case want:
					fn++
				}
			}
		}
		if tp == 0 {
			return 0, nil
		}
		p, r := float64(tp)/float64(tp+fp), float64(tp)/float64(tp+fn)
		return 2 * p * r / (p + r), nil
	}
}

// vadPredict runs a Silero session over x chunk by chunk and returns the
// speech probability of every full chunk.
func vadPredict(ctx context.Context, s *session, x []float32) ([]float32, error) {
	state := make([]float32, 2*128)
	in := make([]float32, vadContext+vadChunk)
	probs := make([]float32, len(x)/vadChunk)
	for f := range probs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		copy(in, in[vadChunk:]) // the previous chunk's tail is the context
		copy(in[vadContext:], x[f*vadChunk:(f+1)*vadChunk])
		out, err := s.Run(Batch{
			{Name: "input", Shape: []int64{1, vadContext + vadChunk}, Data: in},
			{Name: "sr", Shape: []int64{}, Data: []int64{vadRate}},
			{Name: "state", Shape: []int64{2, 1, 128}, Data: state},
		})
		if err != nil {
			return nil, err
		}
		if len(out[0].F32) != 1 || len(out[1].F32) != len(state) {
			return nil, errors.New("unexpected output shapes")
		}
		probs[f] = out[0].F32[0]
		state = out[1].F32
	}
	return probs, nil
}

// TestResample checks the interpolator on a band-limited signal against
// the same signal sampled at the target rate.
func TestResample(t *testing.T) {
	tone := func(rate, n int) []float32 {
		x := make([]float32, n)
		for i := range x {
			tt := float64(i) / float64(rate)
			x[i] = float32(0.5*math.Sin(2*math.Pi*440*tt) + 0.3*math.Sin(2*math.Pi*3000*tt+1))
		}
		return x
	}
	for _, tc := range []struct{ from, to int }{{8000, 16000}, {16000, 8000}, {8000, 12000}} {
		t.Run(fmt.Sprintf("%d->%d", tc.from, tc.to), func(t *testing.T) {
			got := resample(tone(tc.from, tc.from), tc.from, tc.to)
			want := tone(tc.to, tc.to)
			if len(got) != len(want) {
				t.Fatalf("%d samples, want %d", len(got), len(want))
			}
			// Away from the edges (where the window runs out of input).
			edge := tc.to / 100
			if d := maxAbsDiff(got[edge:len(got)-edge], want[edge:len(want)-edge]); d > 0.01 {
				t.Fatalf("max error %g", d)
			}
		})
	}
}

// TestReadWAV round-trips a stereo 16-bit WAV and rejects other formats.
func TestReadWAV(t *testing.T) {
	dir := t.TempDir()
	wav := func(format, channels, bits int, samples []int16) []byte {
		data := make([]byte, 2*len(samples))
		for i, s := range samples {
			binary.LittleEndian.PutUint16(data[2*i:], uint16(s))
		}
		b := []byte("RIFF\x00\x00\x00\x00WAVEfmt \x10\x00\x00\x00")
		b = binary.LittleEndian.AppendUint16(b, uint16(format))
		b = binary.LittleEndian.AppendUint16(b, uint16(channels))
		b = binary.LittleEndian.AppendUint32(b, 8000)
		b = binary.LittleEndian.AppendUint32(b, uint32(8000*channels*bits/8))
		b = binary.LittleEndian.AppendUint16(b, uint16(channels*bits/8))
		b = binary.LittleEndian.AppendUint16(b, uint16(bits))
		b = append(b, "LIST\x03\x00\x00\x00abc\x00"...) // odd-sized chunk, padded
		b = append(b, "data"...)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(data)))
		return append(b, data...)
	}
	for _, tc := range []struct {
		name string
		file []byte
		want []float32
		err  string
	}{
		{"stereo", wav(1, 2, 16, []int16{16384, 0, -32768, -32768}), []float32{0.25, -1}, ""},
		{"float", wav(3, 1, 16, []int16{1}), nil, "want 16-bit PCM"},
		{"not wav", []byte("ID3\x04 mp3"), nil, "not a RIFF/WAVE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, tc.name+".wav")
			if err := os.WriteFile(p, tc.file, 0o644); err != nil {
				t.Fatal(err)
			}
			got, rate, err := readWAV(p)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || rate != 8000 || !slices.Equal(got, tc.want) {
				t.Fatalf("got %v at %d Hz, %v; want %v", got, rate, err, tc.want)
			}
		})
	}
}

// TestSileroVADF1 measures Silero VAD's frame-level F1 on a thirtieth of
// the prompts, the silence files and 5 s of each music file (the results
// run, results_test.go, measures the full set), FP32 against INT8:
//
//   - dynamic with per-channel weights stays within a point of FP32;
//   - onnxruntime's default, per-tensor weights, loses the speech class:
//     the last encoder Conv's weights span 143x their RMS, so most of them
//     round to 0 or ±1; accuracy control finds that Conv (inside the If
//     branch, ranked by weight SQNR) and keeps it in float.
func TestSileroVADF1(t *testing.T) {
	needRuntime(t)
	fp32 := realModel(t, "silero_vad_op18_ifless.onnx")
	clips := vadDataset(t, 30, 5)
	ctx := context.Background()
	f1 := vadF1(clips)
	base, err := f1(ctx, fp32)
	if err != nil {
		t.Fatal(err)
	}
	frames, speech := 0, 0
	for _, c := range clips {
		frames += len(c.speech)
		for _, s := range c.speech {
			if s {
				speech++
			}
		}
	}
	t.Logf("%d clips, %d frames (%d speech): F1 fp32 %.4f", len(clips), frames, speech, base)
	if base < 0.85 {
		t.Fatalf("fp32 F1 %.3f: labelling or feeding broken", base)
	}

	q, rep, err := Dynamic(ctx, fp32, Options{StripNodeMetadata: true, DynamicPerChannel: true})
	if err != nil {
		t.Fatal(err)
	}
	got, err := f1(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("per-channel: F1 %.4f (%v)", got, rep)
	if base-got > 0.01 {
		t.Errorf("per-channel INT8 F1 %.4f is more than one point below FP32 %.4f", got, base)
	}
	if rep.SizeRatio() > 0.30 {
		t.Errorf("per-channel INT8 is %.1f%% of FP32", 100*rep.SizeRatio())
	}

	// Sensitivity needs data for the main graph; nothing there is quantized.
	calib := []Batch{{
		{Name: "input", Shape: []int64{1, vadContext + vadChunk}, Data: clips[0].samples[:vadContext+vadChunk]},
		{Name: "sr", Shape: []int64{}, Data: []int64{vadRate}},
		{Name: "state", Shape: []int64{2, 1, 128}, Data: make([]float32, 256)},
	}}
	res, err := AccuracyControl(ctx, fp32, Options{StripNodeMetadata: true}, AccuracyOptions{
		Mode: ModeDynamic, Evaluate: f1, MaxDrop: 0.01, Calibration: calib,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("accuracy control: trials %+v, float %v, %.1f%% of FP32", res.Trials, res.Float, 100*res.Report.SizeRatio())
	if res.Trials[0].Drop < 0.5 {
		t.Errorf("per-tensor INT8 F1 %.4f: expected the speech class to collapse (the finding this test documents)", res.Trials[0].Metric)
	}
	if !res.Met || !slices.Contains(res.Float, "node_conv1d_4") || len(res.Float) > 2 {
		t.Errorf("accuracy control: met %v with %v in float, want node_conv1d_4", res.Met, res.Float)
	}
	if res.Report.SizeRatio() > 0.30 {
		t.Errorf("INT8 with a Conv in float is %.1f%% of FP32", 100*res.Report.SizeRatio())
	}
}
