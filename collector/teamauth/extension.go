package teamauth

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/collector/client"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/extension/extensionauth"
	"go.uber.org/zap"
)

// The messages a refused client receives (gRPC Unauthenticated, HTTP 401). None of them echoes what was sent.
var (
	errNoToken     = errors.New("teamauth: missing bearer token (send the header Authorization: Bearer <token>)")
	errNotBearer   = errors.New("teamauth: the Authorization header is not a bearer token")
	errUnknownUser = errors.New("teamauth: token not accepted")
)

var _ extensionauth.Server = (*authenticator)(nil)

type authenticator struct {
	cfg    *Config
	logger *zap.Logger
	tokens atomic.Pointer[tokenSet]

	stop chan struct{}
	done sync.WaitGroup
	// file identity of the loaded tokens: a changed mtime or size triggers a reload
	modTime time.Time
	size    int64
}

func newAuthenticator(cfg *Config, logger *zap.Logger) *authenticator {
	return &authenticator{cfg: cfg, logger: logger, stop: make(chan struct{})}
}

func (a *authenticator) Start(_ context.Context, _ component.Host) error {
	st, err := os.Stat(a.cfg.TokensFile)
	if err != nil {
		return err
	}
	set, err := parseTokens(a.cfg.TokensFile)
	if err != nil {
		return err
	}
	a.tokens.Store(set)
	a.modTime, a.size = st.ModTime(), st.Size()
	a.logger.Info("team tokens loaded", zap.String("file", a.cfg.TokensFile), zap.Int("users", len(set.entries)))
	a.done.Add(1)
	go a.watch()
	return nil
}

func (a *authenticator) Shutdown(context.Context) error {
	select {
	case <-a.stop:
	default:
		close(a.stop)
	}
	a.done.Wait()
	return nil
}

func (a *authenticator) watch() {
	defer a.done.Done()
	t := time.NewTicker(a.cfg.ReloadInterval)
	defer t.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-t.C:
			a.reloadIfChanged()
		}
	}
}

// reloadIfChanged re-reads the tokens file when its modification time or size changed. A file that is missing
// or malformed keeps the previous tokens: a half-written edit must not lock every user out.
func (a *authenticator) reloadIfChanged() {
	st, err := os.Stat(a.cfg.TokensFile)
	if err != nil {
		a.logger.Error("team tokens file unreadable; keeping the previous tokens", zap.Error(err))
		return
	}
	if st.ModTime().Equal(a.modTime) && st.Size() == a.size {
		return
	}
	a.modTime, a.size = st.ModTime(), st.Size()
	set, err := parseTokens(a.cfg.TokensFile)
	if err != nil {
		a.logger.Error("team tokens file rejected; keeping the previous tokens", zap.Error(err))
		return
	}
	a.tokens.Store(set)
	a.logger.Info("team tokens reloaded", zap.String("file", a.cfg.TokensFile), zap.Int("users", len(set.entries)))
}

// Authenticate implements extensionauth.Server. sources are the gRPC metadata (lower-case keys) or the HTTP
// headers (canonical keys).
func (a *authenticator) Authenticate(ctx context.Context, sources map[string][]string) (context.Context, error) {
	header := headerValue(sources, "authorization")
	token, err := bearer(header)
	if err == nil {
		if user, ok := a.tokens.Load().lookup(token); ok {
			info := client.FromContext(ctx)
			info.Auth = authData{user: user}
			return client.NewContext(ctx, info), nil
		}
		err = errUnknownUser
	}
	a.logger.Warn("team OTLP request refused",
		zap.String("peer", peerAddr(ctx)), zap.String("reason", err.Error()))
	return ctx, err
}

func headerValue(sources map[string][]string, name string) string {
	for k, v := range sources {
		if strings.EqualFold(k, name) && len(v) > 0 {
			return v[0]
		}
	}
	return ""
}

func bearer(header string) (string, error) {
	if header == "" {
		return "", errNoToken
	}
	scheme, token, ok := strings.Cut(strings.TrimSpace(header), " ")
	if !ok || !strings.EqualFold(scheme, "bearer") || strings.TrimSpace(token) == "" {
		return "", errNotBearer
	}
	return strings.TrimSpace(token), nil
}

func peerAddr(ctx context.Context) string {
	if addr := client.FromContext(ctx).Addr; addr != nil {
		return addr.String()
	}
	return "unknown"
}

// authData is what the pipeline sees as client.Info.Auth: the user name only, never the token.
type authData struct{ user string }

func (d authData) GetAttribute(name string) any {
	if name == "user" || name == "subject" {
		return d.user
	}
	return nil
}

func (authData) GetAttributeNames() []string { return []string{"user", "subject"} }
