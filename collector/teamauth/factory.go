// Package teamauth is a collector server authenticator for tokenbridge's team mode: a bearer token per user, read
// from a `user:token` file that is reloaded when it changes. The authenticated user is put in client.Info.Auth
// (attribute "user"), where the resource/attributes processors read it with `from_context: auth.user`.
package teamauth

import (
	"context"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/extension"
)

var typeStr = component.MustNewType("teamauth")

func NewFactory() extension.Factory {
	return extension.NewFactory(typeStr, createDefaultConfig, create, component.StabilityLevelDevelopment)
}

func createDefaultConfig() component.Config {
	return &Config{ReloadInterval: 5 * time.Second}
}

func create(_ context.Context, set extension.Settings, cfg component.Config) (extension.Extension, error) {
	return newAuthenticator(cfg.(*Config), set.Logger), nil
}
