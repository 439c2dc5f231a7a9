package kubeapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Informer keeps a local copy of every object of one kind, by listing
// once and then watching, and says when something changed. It is the small
// part of client-go's informers the control plane needs.
type Informer[T any] struct {
	Client *Client
	// Path lists the objects, e.g. /api/v1/services.
	Path string
	// Meta returns an object's metadata.
	Meta func(*T) *ObjectMeta
	// OnChange is called after the store changed (never concurrently).
	OnChange func()
	// OnEvent, when set, is called before OnChange with what changed: the
	// object before (nil if it is new) and after (nil if it is gone). A
	// fresh list, which may have changed anything, is OnEvent(nil, nil).
	OnEvent func(old, cur *T)
	Log     *slog.Logger
	// Optional is for a resource whose CRD may not be installed: a list
	// that finds no such resource type counts as an empty, synced one, and
	// is tried again every half minute.
	Optional bool
	// Undecodable counts the objects skipped because they do not decode
	// into T (each is logged).
	Undecodable atomic.Int64

	mu      sync.RWMutex
	objects map[string]*T
	synced  chan struct{}
	once    sync.Once
}

func (inf *Informer[T]) init() {
	inf.once.Do(func() {
		inf.synced = make(chan struct{})
		inf.objects = map[string]*T{}
	})
}

// Synced is closed once the first list is in the store.
func (inf *Informer[T]) Synced() <-chan struct{} {
	inf.init()
	return inf.synced
}

// Get returns the object namespace/name, or nil.
func (inf *Informer[T]) Get(key string) *T {
	inf.mu.RLock()
	defer inf.mu.RUnlock()
	return inf.objects[key]
}

// List returns every object. The objects are shared: do not modify them.
func (inf *Informer[T]) List() []*T {
	inf.mu.RLock()
	defer inf.mu.RUnlock()
	out := make([]*T, 0, len(inf.objects))
	for _, o := range inf.objects {
		out = append(out, o)
	}
	return out
}

type list[T any] struct {
	Metadata struct {
		ResourceVersion string `json:"resourceVersion"`
	} `json:"metadata"`
	// Items are decoded one by one: one the informer's type cannot hold
	// is skipped, not the list.
	Items []json.RawMessage `json:"items"`
}

// Run lists and watches until ctx ends. A watch that breaks is resumed
// from the last resource version seen; one the API server can no longer
// resume ("410 Gone") starts again with a fresh list.
func (inf *Informer[T]) Run(ctx context.Context) {
	inf.init()
	log := inf.Log
	if log == nil {
		log = slog.Default()
	}
	backoff := 100 * time.Millisecond
	rv := ""
	for ctx.Err() == nil {
		if rv == "" {
			var err error
			if rv, err = inf.relist(ctx); err != nil {
				var se *StatusError
				if inf.Optional && errors.As(err, &se) && se.Code == http.StatusNotFound {
					inf.markSynced()
					sleep(ctx, 30*time.Second)
					continue
				}
				if ctx.Err() == nil {
					log.Warn("listing", slog.String("path", inf.Path), slog.Any("error", err))
				}
				sleep(ctx, backoff)
				backoff = min(2*backoff, 5*time.Second)
				continue
			}
			backoff = 100 * time.Millisecond
		}
		sep := "?"
		if strings.Contains(inf.Path, "?") {
			sep = "&"
		}
		err := inf.Client.Watch(ctx, inf.Path+sep+"allowWatchBookmarks=true&resourceVersion="+rv, func(ev WatchEvent) {
			if ev.Type == "ERROR" {
				var st struct{ Code int }
				json.Unmarshal(ev.Object, &st)
				if st.Code == http.StatusGone {
					rv = ""
				}
				return
			}
			obj := new(T)
			if err := json.Unmarshal(ev.Object, obj); err != nil {
				inf.undecodable(ev.Object, err)
				return
			}
			m := inf.Meta(obj)
			rv = m.ResourceVersion
			inf.mu.Lock()
			old, cur := inf.objects[m.Key()], obj
			switch ev.Type {
			case "ADDED", "MODIFIED":
				inf.objects[m.Key()] = obj
			case "DELETED":
				delete(inf.objects, m.Key())
				cur = nil
			default: // BOOKMARK
				inf.mu.Unlock()
				return
			}
			inf.mu.Unlock()
			if inf.OnEvent != nil {
				inf.OnEvent(old, cur)
			}
			inf.OnChange()
		})
		var se *StatusError
		if errors.As(err, &se) && se.Code == http.StatusGone {
			rv = ""
		} else if err != nil && ctx.Err() == nil {
			log.Warn("watch broke; resuming", slog.String("path", inf.Path), slog.Any("error", err))
			sleep(ctx, time.Second)
		}
	}
}

func (inf *Informer[T]) relist(ctx context.Context) (string, error) {
	var l list[T]
	if err := inf.Client.Do(ctx, "GET", inf.Path, nil, &l); err != nil {
		return "", fmt.Errorf("listing %s: %w", inf.Path, err)
	}
	objects := make(map[string]*T, len(l.Items))
	for _, raw := range l.Items {
		o := new(T)
		if err := json.Unmarshal(raw, o); err != nil {
			inf.undecodable(raw, err)
			continue
		}
		objects[inf.Meta(o).Key()] = o
	}
	inf.mu.Lock()
	inf.objects = objects
	inf.mu.Unlock()
	// OnEvent before Synced: whoever builds once everything is synced
	// must find this list's mark already made.
	if inf.OnEvent != nil {
		inf.OnEvent(nil, nil)
	}
	inf.markSynced()
	inf.OnChange()
	return l.Metadata.ResourceVersion, nil
}

// undecodable reports an object the informer's type cannot hold, by name
// where its metadata can be read, and counts it.
func (inf *Informer[T]) undecodable(raw json.RawMessage, err error) {
	inf.Undecodable.Add(1)
	var m struct {
		Metadata ObjectMeta `json:"metadata"`
	}
	json.Unmarshal(raw, &m)
	log := inf.Log
	if log == nil {
		log = slog.Default()
	}
	log.Warn("skipping an object that does not decode", slog.String("path", inf.Path), slog.String("object", m.Metadata.Key()), slog.Any("error", err))
}

func (inf *Informer[T]) markSynced() {
	select {
	case <-inf.synced:
	default:
		close(inf.synced)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
