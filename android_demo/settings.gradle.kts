pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        // org.pytorch:executorch-android (and its fbjni / soloader dependencies) come from Maven Central.
        mavenCentral()
    }
}

rootProject.name = "ExporterDemo"
include(":app")
