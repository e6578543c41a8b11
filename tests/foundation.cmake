# Foundation: config validation, the mp3d command line.
mp3d_test(test_config test_config.c LIBS mp3d_io TIMEOUT 60)
mp3d_script_test(test_cli test_cli.sh TIMEOUT 120)
