package kubeapi

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

type port struct {
	Metadata ObjectMeta `json:"metadata"`
	Spec     struct {
		Port int `json:"port"`
	} `json:"spec"`
}

func TestAnObjectThatDoesNotDecodeIsSkippedNotTheList(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("watch") != "" || r.URL.Query().Get("resourceVersion") != "" {
			<-r.Context().Done() // a watch with nothing to say
			return
		}
		io.WriteString(w, `{"metadata":{"resourceVersion":"7"},"items":[
			{"metadata":{"name":"good","namespace":"shop"},"spec":{"port":8080}},
			{"metadata":{"name":"bad","namespace":"shop"},"spec":{"port":"eighty"}},
			{"metadata":{"name":"also-good","namespace":"shop"},"spec":{"port":9090}}]}`)
	}))
	defer srv.Close()
	inf := &Informer[port]{Client: &Client{Host: srv.URL, HTTP: srv.Client()}, Path: "/apis/x/v1/ports",
		Meta: func(o *port) *ObjectMeta { return &o.Metadata }, OnChange: func() {}, Log: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go inf.Run(ctx)
	select {
	case <-inf.Synced():
	case <-ctx.Done():
		t.Fatal("the informer never synced: one bad object failed the whole list")
	}
	if inf.Get("shop/good") == nil || inf.Get("shop/also-good") == nil || inf.Get("shop/bad") != nil {
		t.Errorf("objects: %+v", inf.List())
	}
	if n := inf.Undecodable.Load(); n != 1 {
		t.Errorf("undecodable = %d, want 1", n)
	}
}
