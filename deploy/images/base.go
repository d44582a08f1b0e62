package images

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"path"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/edgefleet/edgefleet/deploy/internal/buildenv"
)

// UID and GID of the user the images run as (distroless's "nonroot").
const (
	UID = 65532
	GID = 65532
)

// DataDir is the agent's and the hub's data folder in the images, owned by
// UID; mount a volume here.
const DataDir = "/var/lib/edgefleet"

// ORTPath is onnxruntime's library in the images and the .deb packages.
const ORTPath = "/usr/lib/edgefleet/" + buildenv.ORTLibName

// BinPath is the edgefleet binary in the images and the .deb packages.
const BinPath = "/usr/bin/edgefleet"

// entry is one file, folder or link of a layer.
type entry struct {
	hdr  tar.Header
	data []byte
}

// dropped reports whether a file of a base .deb stays out of the image:
// documentation (but not the copyright files), manuals, translations,
// lintian overrides, gconv modules (nothing in the image calls iconv), gdb
// helpers, and the ca-certificates maintenance script (the bundle is built
// here instead).
func dropped(name string) bool {
	switch {
	case strings.HasPrefix(name, "usr/share/doc/"):
		return path.Base(name) != "copyright"
	case strings.HasPrefix(name, "usr/share/man/"), strings.HasPrefix(name, "usr/share/info/"),
		strings.HasPrefix(name, "usr/share/locale/"), strings.HasPrefix(name, "usr/share/lintian/"),
		strings.HasPrefix(name, "usr/share/gdb/"), strings.HasPrefix(name, "usr/share/gcc/"),
		strings.HasPrefix(name, "usr/share/bug/"), strings.HasPrefix(name, "usr/sbin/"),
		strings.HasPrefix(name, "etc/ca-certificates/"), strings.HasPrefix(name, "usr/share/ca-certificates/") && !strings.HasSuffix(name, ".crt"):
		return true
	case strings.Contains(name, "/gconv/"):
		return true
	}
	return false
}

// baseEntries unpacks the base .debs (libc6, libgcc-s1, libstdc++6,
// ca-certificates) and adds what their maintainer scripts and the base
// system would: users and groups, nsswitch.conf, the CA bundle, /tmp, the
// non-root user's home and the data folder.
func baseEntries(ctx context.Context, debs []string) ([]entry, error) {
	var out []entry
	var certs []entry
	for _, deb := range debs {
		raw, err := buildenv.DataTar(ctx, deb)
		if err != nil {
			return nil, err
		}
		tr := tar.NewReader(bytes.NewReader(raw))
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", deb, err)
			}
			name := strings.TrimPrefix(path.Clean(strings.TrimPrefix(h.Name, "./")), "/")
			if name == "." || dropped(name) {
				continue
			}
			e := entry{hdr: tar.Header{Name: name, Mode: h.Mode, Linkname: h.Linkname}}
			switch h.Typeflag {
			case tar.TypeDir:
				continue // parents are made for what is kept
			case tar.TypeSymlink:
				e.hdr.Typeflag = tar.TypeSymlink
			case tar.TypeLink:
				e.hdr.Typeflag = tar.TypeLink
				e.hdr.Linkname = strings.TrimPrefix(path.Clean(strings.TrimPrefix(h.Linkname, "./")), "/")
			case tar.TypeReg:
				e.hdr.Typeflag = tar.TypeReg
				if e.data, err = io.ReadAll(tr); err != nil {
					return nil, err
				}
			default:
				return nil, fmt.Errorf("%s: %s: unexpected tar entry type %c", deb, name, h.Typeflag)
			}
			if strings.HasPrefix(name, "usr/share/ca-certificates/") {
				certs = append(certs, e)
			}
			out = append(out, e)
		}
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("no CA certificates in %v", debs)
	}
	// /etc/ssl/certs/ca-certificates.crt, as update-ca-certificates builds it.
	sort.Slice(certs, func(i, j int) bool { return certs[i].hdr.Name < certs[j].hdr.Name })
	var bundle bytes.Buffer
	for _, c := range certs {
		bundle.Write(bytes.TrimRight(c.data, "\n"))
		bundle.WriteByte('\n')
	}
	file := func(name string, mode int64, body string) entry {
		return entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode}, data: []byte(body)}
	}
	dir := func(name string, mode int64, uid int) entry {
		return entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, Uid: uid, Gid: uid}}
	}
	out = append(out,
		entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "etc/ssl/certs/ca-certificates.crt", Mode: 0o644}, data: bundle.Bytes()},
		file("etc/passwd", 0o644, fmt.Sprintf("root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/usr/sbin/nologin\n", UID, GID)),
		file("etc/group", 0o644, fmt.Sprintf("root:x:0:\nnogroup:x:65534:\nnonroot:x:%d:\n", GID)),
		file("etc/nsswitch.conf", 0o644, "passwd: files\ngroup: files\nhosts: files dns\n"),
		dir("tmp", 0o1777, 0),
		dir("root", 0o700, 0),
		dir("home/nonroot", 0o700, UID),
		dir(strings.TrimPrefix(DataDir, "/"), 0o750, UID),
	)
	return out, nil
}

// layerTar writes entries as a reproducible tar: parents first and sorted
// by name, owner root unless set, every time set to mtime, no user or group
// names. Missing parent folders are added (0755, root).
func layerTar(entries []entry, mtime time.Time) ([]byte, error) {
	byName := map[string]entry{}
	for _, e := range entries {
		if _, dup := byName[e.hdr.Name]; dup && e.hdr.Typeflag != tar.TypeDir {
			return nil, fmt.Errorf("%s is in two packages", e.hdr.Name)
		}
		byName[e.hdr.Name] = e
	}
	for _, e := range entries {
		for d := path.Dir(e.hdr.Name); d != "." && d != "/"; d = path.Dir(d) {
			if _, ok := byName[d]; !ok {
				byName[d] = entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755}}
			}
		}
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	slices.Sort(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		e := byName[n]
		h := e.hdr
		if h.Typeflag == tar.TypeDir {
			h.Name += "/"
		}
		h.Size = int64(len(e.data))
		h.ModTime = mtime
		if err := tw.WriteHeader(&h); err != nil {
			return nil, fmt.Errorf("%s: %w", n, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
