// Package powerfs is an in-memory FUSE file system that can lose power.
//
// Every file and directory has two states: the current one, which reads
// and writes see, and the durable one, which is what a disk would still
// hold after the power went out. fsync (or fdatasync) of a file makes its
// current contents and size durable; fsync of a directory makes its
// current entries durable (names created, removed or renamed since are
// not). PowerCut throws every current state away and replaces it with
// the durable one, recursively from the root: a file created and synced
// whose directory was never synced is gone, a file whose name is durable
// but whose data was never synced comes back empty or old.
//
// This is the strictest reading of POSIX (and what ext4 with
// data=writeback, or a disk whose volatile cache is lost, can do); a
// program that survives it survives a real power cut.
//
//	fsys := powerfs.New(powerfs.Options{Capacity: 64 << 20})
//	m, err := fsys.Mount("/mnt/dev1")        // a fresh mount of the current state
//	... run the program, kill it with SIGKILL ...
//	err = m.Unmount()
//	fsys.PowerCut()                          // only fsynced data survives
//	m, err = fsys.Mount("/mnt/dev1")         // "reboot"
//
// Capacity, when set, bounds the bytes of all current file contents;
// writes beyond it fail with ENOSPC (a full disk), and statfs reports it.
// SetCapacity changes it while mounted.
package powerfs

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Options configure a file system.
type Options struct {
	// Capacity bounds the bytes of file contents (0: 1 TiB).
	Capacity int64
	// Name is the mount's source name in /proc/mounts (default "powerfs").
	Name string
}

// FS is the file system's state; it outlives mounts.
type FS struct {
	mu       sync.Mutex // guards everything below and every obj
	root     *obj
	nextIno  uint64
	capacity int64
	used     int64 // bytes of current file contents
	name     string
	stats    Stats
}

// Stats counts what the file system saw.
type Stats struct {
	Writes, Fsyncs, DirFsyncs, PowerCuts int
	// LostBytes is the file content PowerCut threw away (current bytes
	// that differed from the durable ones), LostEntries the directory
	// entries it undid (created, removed or renamed and not synced).
	LostBytes, LostEntries int64
}

// obj is a file or a directory, shared by all mounts.
type obj struct {
	ino   uint64
	dir   bool
	mode  uint32
	mtime time.Time

	data, durData []byte          // files
	kids, durKids map[string]*obj // directories
}

// New returns an empty file system.
func New(o Options) *FS {
	if o.Capacity <= 0 {
		o.Capacity = 1 << 40
	}
	if o.Name == "" {
		o.Name = "powerfs"
	}
	f := &FS{capacity: o.Capacity, name: o.Name, nextIno: 1}
	f.root = f.newObj(true, 0o755)
	f.root.durKids = map[string]*obj{}
	return f
}

func (f *FS) newObj(dir bool, mode uint32) *obj {
	f.nextIno++
	o := &obj{ino: f.nextIno, dir: dir, mode: mode & 0o7777, mtime: time.Now()}
	if dir {
		o.kids = map[string]*obj{}
	}
	return o
}

// SetCapacity changes the capacity (bytes of file contents).
func (f *FS) SetCapacity(n int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.capacity = n
}

// Used returns the bytes of current file contents.
func (f *FS) Used() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.used
}

// Stats returns the counters.
func (f *FS) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats
}

// PowerCut replaces the current state with the durable one. Call it
// with no mount active (Unmount first): the kernel's caches of a live
// mount would still show the lost state.
func (f *FS) PowerCut() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stats.PowerCuts++
	f.used = 0
	seen := map[*obj]bool{}
	var walk func(o *obj)
	walk = func(o *obj) {
		if seen[o] {
			return
		}
		seen[o] = true
		if !o.dir {
			if !slices.Equal(o.data, o.durData) {
				f.stats.LostBytes += int64(max(len(o.data), len(o.durData)))
			}
			o.data = slices.Clone(o.durData)
			f.used += int64(len(o.data))
			return
		}
		for name, k := range o.kids {
			if o.durKids[name] != k {
				f.stats.LostEntries++
			}
		}
		for name, k := range o.durKids {
			if o.kids[name] != k {
				f.stats.LostEntries++
			}
		}
		o.kids = maps.Clone(o.durKids)
		if o.kids == nil {
			o.kids = map[string]*obj{}
		}
		for _, k := range o.kids {
			walk(k)
		}
	}
	walk(f.root)
}

// Sync makes everything durable, as an orderly shutdown would.
func (f *FS) Sync() {
	f.mu.Lock()
	defer f.mu.Unlock()
	var walk func(o *obj)
	walk = func(o *obj) {
		if !o.dir {
			o.durData = slices.Clone(o.data)
			return
		}
		o.durKids = maps.Clone(o.kids)
		for _, k := range o.kids {
			walk(k)
		}
	}
	walk(f.root)
}

// Mount is a live mount of the file system.
type Mount struct {
	Dir string
	srv *fuse.Server
}

// Mount mounts the current state on dir (created if missing). As root
// it calls mount(2) itself, otherwise fusermount3.
func (f *FS) Mount(dir string) (*Mount, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	zero := time.Duration(0)
	srv, err := fs.Mount(dir, &node{fs: f, o: f.root}, &fs.Options{
		EntryTimeout: &zero, AttrTimeout: &zero, NegativeTimeout: &zero,
		MountOptions: fuse.MountOptions{
			FsName: f.name, Name: "powerfs", DirectMount: true, AllowOther: os.Geteuid() == 0,
			MaxWrite: 128 << 10, DisableXAttrs: true,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("powerfs: mount %s: %w", dir, err)
	}
	if err := srv.WaitMount(); err != nil {
		_ = srv.Unmount()
		return nil, fmt.Errorf("powerfs: mount %s: %w", dir, err)
	}
	cloexecFUSE()
	return &Mount{Dir: dir, srv: srv}, nil
}

// Unmount unmounts, retrying for a few seconds while the kernel still
// releases files of a killed process, then detaching lazily.
func (m *Mount) Unmount() error {
	var err error
	for range 50 {
		if err = m.srv.Unmount(); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	if derr := syscall.Unmount(m.Dir, syscall.MNT_DETACH); derr != nil {
		return errors.Join(err, derr)
	}
	// The kernel ends the connection once the last open file closes; a
	// process still holding one keeps the old state visible to itself.
	done := make(chan struct{})
	go func() { m.srv.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-time.After(5 * time.Second):
		return fmt.Errorf("powerfs: %s detached but still in use: %w", m.Dir, err)
	}
}

// node is the go-fuse view of an obj.
type node struct {
	fs.Inode
	fs *FS
	o  *obj
}

var (
	_ fs.NodeLookuper  = (*node)(nil)
	_ fs.NodeGetattrer = (*node)(nil)
	_ fs.NodeSetattrer = (*node)(nil)
	_ fs.NodeCreater   = (*node)(nil)
	_ fs.NodeMkdirer   = (*node)(nil)
	_ fs.NodeUnlinker  = (*node)(nil)
	_ fs.NodeRmdirer   = (*node)(nil)
	_ fs.NodeRenamer   = (*node)(nil)
	_ fs.NodeReaddirer = (*node)(nil)
	_ fs.NodeOpener    = (*node)(nil)
	_ fs.NodeReader    = (*node)(nil)
	_ fs.NodeWriter    = (*node)(nil)
	_ fs.NodeFsyncer   = (*node)(nil)
	_ fs.NodeFlusher   = (*node)(nil)
	_ fs.NodeStatfser  = (*node)(nil)
)

func (o *obj) typ() uint32 {
	if o.dir {
		return syscall.S_IFDIR
	}
	return syscall.S_IFREG
}

func (o *obj) fill(a *fuse.Attr) {
	a.Ino = o.ino
	a.Mode = o.typ() | o.mode
	a.Nlink = 1
	if o.dir {
		a.Nlink = 2
	}
	a.Size = uint64(len(o.data))
	a.Blocks = (a.Size + 511) / 512
	a.Blksize = 4096
	a.SetTimes(nil, &o.mtime, &o.mtime)
}

func (n *node) child(ctx context.Context, c *obj, out *fuse.EntryOut) *fs.Inode {
	c.fill(&out.Attr)
	return n.NewInode(ctx, &node{fs: n.fs, o: c}, fs.StableAttr{Mode: c.typ(), Ino: c.ino})
}

// Lookup implements fs.NodeLookuper.
func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	c := n.o.kids[name]
	if c == nil {
		return nil, syscall.ENOENT
	}
	return n.child(ctx, c, out), 0
}

// Getattr implements fs.NodeGetattrer.
func (n *node) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	n.o.fill(&out.Attr)
	return 0
}

// Setattr implements fs.NodeSetattrer (truncate, chmod, utimes).
func (n *node) Setattr(ctx context.Context, _ fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	if sz, ok := in.GetSize(); ok {
		if n.o.dir {
			return syscall.EISDIR
		}
		if errno := n.fs.resize(n.o, int64(sz)); errno != 0 {
			return errno
		}
	}
	if m, ok := in.GetMode(); ok {
		n.o.mode = m & 0o7777
	}
	if mt, ok := in.GetMTime(); ok {
		n.o.mtime = mt
	}
	n.o.fill(&out.Attr)
	return 0
}

// resize sets a file's length, within the capacity.
func (f *FS) resize(o *obj, sz int64) syscall.Errno {
	old := int64(len(o.data))
	if sz > old && f.used+sz-old > f.capacity {
		return syscall.ENOSPC
	}
	if sz <= int64(cap(o.data)) {
		o.data = o.data[:sz]
		clear(o.data[min(old, sz):])
	} else {
		o.data = append(o.data, make([]byte, sz-old)...)
	}
	f.used += sz - old
	o.mtime = time.Now()
	return 0
}

// Create implements fs.NodeCreater.
func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	if c := n.o.kids[name]; c != nil {
		if flags&syscall.O_EXCL != 0 {
			return nil, nil, 0, syscall.EEXIST
		}
		if flags&syscall.O_TRUNC != 0 {
			n.fs.resize(c, 0)
		}
		return n.child(ctx, c, out), nil, 0, 0
	}
	c := n.fs.newObj(false, mode)
	n.o.kids[name] = c
	n.o.mtime = time.Now()
	return n.child(ctx, c, out), nil, 0, 0
}

// Mkdir implements fs.NodeMkdirer.
func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	if n.o.kids[name] != nil {
		return nil, syscall.EEXIST
	}
	c := n.fs.newObj(true, mode)
	n.o.kids[name] = c
	n.o.mtime = time.Now()
	return n.child(ctx, c, out), 0
}

// Unlink implements fs.NodeUnlinker.
func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	c := n.o.kids[name]
	if c == nil {
		return syscall.ENOENT
	}
	if c.dir {
		return syscall.EISDIR
	}
	delete(n.o.kids, name)
	n.o.mtime = time.Now()
	return 0
}

// Rmdir implements fs.NodeRmdirer.
func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	c := n.o.kids[name]
	if c == nil {
		return syscall.ENOENT
	}
	if !c.dir {
		return syscall.ENOTDIR
	}
	if len(c.kids) > 0 {
		return syscall.ENOTEMPTY
	}
	delete(n.o.kids, name)
	n.o.mtime = time.Now()
	return 0
}

// renameNoReplace is RENAME_NOREPLACE from renameat2(2).
const renameNoReplace = 1

// Rename implements fs.NodeRenamer (plain and RENAME_NOREPLACE).
func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if flags&^renameNoReplace != 0 {
		return syscall.EINVAL
	}
	np, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	c := n.o.kids[name]
	if c == nil {
		return syscall.ENOENT
	}
	if old := np.o.kids[newName]; old != nil {
		if flags&renameNoReplace != 0 {
			return syscall.EEXIST
		}
		if old.dir != c.dir {
			if old.dir {
				return syscall.EISDIR
			}
			return syscall.ENOTDIR
		}
		if old.dir && len(old.kids) > 0 {
			return syscall.ENOTEMPTY
		}
	}
	delete(n.o.kids, name)
	np.o.kids[newName] = c
	n.o.mtime, np.o.mtime = time.Now(), time.Now()
	return 0
}

// Readdir implements fs.NodeReaddirer.
func (n *node) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	list := make([]fuse.DirEntry, 0, len(n.o.kids))
	for _, name := range slices.Sorted(maps.Keys(n.o.kids)) {
		c := n.o.kids[name]
		list = append(list, fuse.DirEntry{Name: name, Ino: c.ino, Mode: c.typ()})
	}
	return fs.NewListDirStream(list), 0
}

// Open implements fs.NodeOpener; reads and writes go to the node.
func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	if flags&syscall.O_TRUNC != 0 && !n.o.dir {
		if errno := n.fs.resize(n.o, 0); errno != 0 {
			return nil, 0, errno
		}
	}
	return nil, 0, 0
}

// Read implements fs.NodeReader.
func (n *node) Read(ctx context.Context, _ fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	if off >= int64(len(n.o.data)) {
		return fuse.ReadResultData(nil), 0
	}
	k := copy(dest, n.o.data[off:])
	return fuse.ReadResultData(dest[:k]), 0
}

// Write implements fs.NodeWriter.
func (n *node) Write(ctx context.Context, _ fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	n.fs.stats.Writes++
	if end := off + int64(len(data)); end > int64(len(n.o.data)) {
		if errno := n.fs.resize(n.o, end); errno != 0 {
			return 0, errno
		}
	}
	copy(n.o.data[off:], data)
	n.o.mtime = time.Now()
	return uint32(len(data)), 0
}

// Fsync implements fs.NodeFsyncer for files and directories (fsyncdir).
func (n *node) Fsync(ctx context.Context, _ fs.FileHandle, flags uint32) syscall.Errno {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	if n.o.dir {
		n.fs.stats.DirFsyncs++
		n.o.durKids = maps.Clone(n.o.kids)
		return 0
	}
	n.fs.stats.Fsyncs++
	n.o.durData = slices.Clone(n.o.data)
	return 0
}

// Flush implements fs.NodeFlusher: close(2) does not sync.
func (n *node) Flush(ctx context.Context, _ fs.FileHandle) syscall.Errno { return 0 }

// Statfs implements fs.NodeStatfser from the capacity.
func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	const bs = 4096
	out.Bsize, out.Frsize = bs, bs
	out.Blocks = uint64(n.fs.capacity / bs)
	free := max(n.fs.capacity-n.fs.used, 0) / bs
	out.Bfree, out.Bavail = uint64(free), uint64(free)
	out.Files, out.Ffree = 1<<20, 1<<20
	out.NameLen = 255
	return 0
}

// cloexecFUSE sets close-on-exec on this process's /dev/fuse descriptors:
// go-fuse's direct mount opens them without it, and every program the
// caller starts afterwards would hold the connections open.
func cloexecFUSE() {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range ents {
		if t, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && t == "/dev/fuse" {
			if fd, err := strconv.Atoi(e.Name()); err == nil {
				syscall.CloseOnExec(fd)
			}
		}
	}
}
