package file

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/meshproj/mesh/discovery"
)

// Backend serves a discovery file and follows its edits.
type Backend struct {
	Path string
	Log  *slog.Logger
	// Debounce groups the events of one save (editors write, rename and
	// chmod); 100ms if zero.
	Debounce time.Duration
}

// Load reads and validates the file once.
func Load(path string) (discovery.State, []byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return discovery.State{}, nil, fmt.Errorf("reading discovery file: %w", err)
	}
	services, policies, err := ParseAll(path, data)
	if err != nil {
		return discovery.State{}, nil, err
	}
	sum := sha256.Sum256(data)
	return discovery.State{
		Services: services,
		Policies: policies,
		Source:   "file " + path,
		Revision: hex.EncodeToString(sum[:6]),
		Updated:  time.Now(),
	}, data, nil
}

// Run implements discovery.Backend. It watches the file's directory rather
// than the file, so that saves by rename (editors, Kubernetes ConfigMap
// volumes) are seen.
func (b *Backend) Run(ctx context.Context, update func(discovery.State)) error {
	log := b.Log
	if log == nil {
		log = slog.Default()
	}
	debounce := b.Debounce
	if debounce == 0 {
		debounce = 100 * time.Millisecond
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching discovery file: %w", err)
	}
	defer w.Close()
	if err := w.Add(filepath.Dir(b.Path)); err != nil {
		return fmt.Errorf("watching %s: %w", filepath.Dir(b.Path), err)
	}
	state, last, err := Load(b.Path)
	if err != nil {
		return err
	}
	update(state)

	target, _ := filepath.Abs(b.Path)
	var timer *time.Timer
	fire := make(chan struct{}, 1)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if p, _ := filepath.Abs(ev.Name); p != target && filepath.Base(ev.Name) != "..data" {
				continue
			}
			if timer == nil {
				timer = time.AfterFunc(debounce, func() {
					select {
					case fire <- struct{}{}:
					default:
					}
				})
			} else {
				timer.Reset(debounce)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			log.Warn("discovery file watch error", slog.String("file", b.Path), slog.Any("error", err))
		case <-fire:
			state, data, err := Load(b.Path)
			if err != nil {
				log.Error("discovery file rejected; keeping the last good state", slog.String("file", b.Path), slog.Any("error", err))
				continue
			}
			if string(data) == string(last) {
				continue
			}
			last = data
			log.Info("discovery file reloaded", slog.String("file", b.Path), slog.Int("services", len(state.Services)), slog.String("revision", state.Revision))
			update(state)
		}
	}
}
