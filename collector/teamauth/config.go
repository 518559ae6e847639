package teamauth

import (
	"errors"
	"time"
)

// Config of the teamauth extension.
type Config struct {
	// TokensFile holds `user:token` lines (TOKENBRIDGE_TEAM_TOKENS_FILE in tokenbridge's team config).
	TokensFile string `mapstructure:"tokens_file"`
	// ReloadInterval is how often the file's modification time and size are checked; a changed file is re-read.
	// A file that fails to parse keeps the previous tokens in force (and is logged).
	ReloadInterval time.Duration `mapstructure:"reload_interval"`
}

func (c *Config) Validate() error {
	if c.TokensFile == "" {
		return errors.New("tokens_file is required (a file of user:token lines)")
	}
	if c.ReloadInterval <= 0 {
		return errors.New("reload_interval must be positive")
	}
	return nil
}
